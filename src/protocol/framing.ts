/**
 * Transport framing (pure): every Noise transport message travels as
 *
 *   length (2 bytes, big-endian) || ciphertext (length bytes)
 *
 * The length is that of the ciphertext alone, so it is at most 65535 (the Noise maximum message length,
 * Noise spec §3) and at least 16 (a ChaChaPoly tag over an empty plaintext, §5.1 / §12.3). See
 * docs/PROTOCOL.md, "Transport framing and rekeying".
 */
import { DecodeError, InvalidArgumentError } from '../errors.js'
import { assertBytes } from './bytes.js'

/** Noise maximum message length (Noise spec §3). */
export const MAX_FRAME_CIPHERTEXT = 65535
/** AEAD tag length: the smallest valid ciphertext. */
export const AEAD_TAG_LENGTH = 16
/** Largest plaintext one frame can carry. */
export const MAX_FRAME_PLAINTEXT = MAX_FRAME_CIPHERTEXT - AEAD_TAG_LENGTH
export const FRAME_HEADER_LENGTH = 2

/** Prefixes one ciphertext with its 2-byte big-endian length. */
export function encodeFrame(ciphertext: Uint8Array): Uint8Array {
  assertBytes(ciphertext, 'ciphertext')
  if (ciphertext.length < AEAD_TAG_LENGTH || ciphertext.length > MAX_FRAME_CIPHERTEXT) {
    throw new InvalidArgumentError(
      `ciphertext must be ${AEAD_TAG_LENGTH}..${MAX_FRAME_CIPHERTEXT} bytes, got ${ciphertext.length}`,
    )
  }
  const out = new Uint8Array(FRAME_HEADER_LENGTH + ciphertext.length)
  out[0] = ciphertext.length >>> 8
  out[1] = ciphertext.length & 0xff
  out.set(ciphertext, FRAME_HEADER_LENGTH)
  return out
}

type DecoderState =
  | { kind: 'header'; high: number | undefined }
  | { kind: 'body'; body: Uint8Array; filled: number }
  | { kind: 'failed'; error: DecodeError }

/**
 * Incremental frame parser for a byte stream cut at arbitrary points. Each body is allocated once at its
 * announced length and filled in place, so total work is linear in the bytes pushed whatever the chunking.
 * A bad length is rejected as soon as its 2 bytes are known, before any body is buffered; the decoder then
 * stays failed and every later `push` throws the same error (frames completed earlier in that same chunk are
 * dropped with it: a framing error is fatal to the connection).
 */
export class FrameDecoder {
  readonly maxLength: number
  #state: DecoderState = { kind: 'header', high: undefined }

  /** `maxLength` lowers the accepted ciphertext length below the 65535 that 2 length bytes can express. */
  constructor(options: { maxLength?: number } = {}) {
    const maxLength = options.maxLength ?? MAX_FRAME_CIPHERTEXT
    if (!Number.isInteger(maxLength) || maxLength < AEAD_TAG_LENGTH || maxLength > MAX_FRAME_CIPHERTEXT) {
      throw new InvalidArgumentError(`maxLength must be an integer in ${AEAD_TAG_LENGTH}..${MAX_FRAME_CIPHERTEXT}`)
    }
    this.maxLength = maxLength
  }

  /** Feeds bytes; returns the ciphertexts of the frames completed by them (fresh copies, in order). */
  push(chunk: Uint8Array): Uint8Array[] {
    assertBytes(chunk, 'chunk')
    const frames: Uint8Array[] = []
    let pos = 0
    while (pos < chunk.length) {
      const state = this.#state
      switch (state.kind) {
        case 'failed':
          throw state.error
        case 'header': {
          const byte = chunk[pos++]!
          if (state.high === undefined) {
            state.high = byte
            break
          }
          const length = (state.high << 8) | byte
          if (length < AEAD_TAG_LENGTH) {
            this.#fail(new DecodeError('ERR_DECODE', `frame length ${length} is shorter than the ${AEAD_TAG_LENGTH}-byte tag`))
          }
          if (length > this.maxLength) {
            this.#fail(new DecodeError('ERR_FRAME_TOO_LARGE', `frame length ${length} exceeds ${this.maxLength}`))
          }
          this.#state = { kind: 'body', body: new Uint8Array(length), filled: 0 }
          break
        }
        case 'body': {
          const take = Math.min(state.body.length - state.filled, chunk.length - pos)
          state.body.set(chunk.subarray(pos, pos + take), state.filled)
          state.filled += take
          pos += take
          if (state.filled === state.body.length) {
            frames.push(state.body)
            this.#state = { kind: 'header', high: undefined }
          }
          break
        }
      }
    }
    if (this.#state.kind === 'failed') throw this.#state.error
    return frames
  }

  /** True when the bytes pushed so far end exactly on a frame boundary (a clean place for the stream to end). */
  get idle(): boolean {
    return this.#state.kind === 'header' && this.#state.high === undefined
  }

  /** True once a bad length was seen; the decoder is then unusable. */
  get failed(): boolean {
    return this.#state.kind === 'failed'
  }

  #fail(error: DecodeError): never {
    this.#state = { kind: 'failed', error }
    throw error
  }
}
