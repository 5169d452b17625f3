/** X25519 test inputs shared by the Noise and DH-backend tests. */

const P = (1n << 255n) - 19n

/** Curve25519 points of small order, canonical and non-canonical encodings, with and without the top bit. */
export const LOW_ORDER: readonly Uint8Array[] = [
  0n,
  1n,
  325606250916557431795983626356110631294008115727848805560023387167927233504n,
  39382357235489614581723060781553021112529911719440698176882885853963445705823n,
  P - 1n,
  P,
  P + 1n,
].flatMap((u) => {
  const bytes = new Uint8Array(32)
  for (let i = 0, v = u; i < 32; i++, v >>= 8n) bytes[i] = Number(v & 0xffn)
  const high = bytes.slice()
  high[31]! |= 0x80
  return [bytes, high]
})
