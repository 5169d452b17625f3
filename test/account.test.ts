import test from 'ava'
import { mkdtemp, readFile, rm, stat, writeFile, chmod, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { x25519 } from '@noble/curves/ed25519.js'
import { InvalidArgumentError, StorageError } from '../src/errors.js'
import { identityFromSeed, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { onionServiceKeyFromSeed } from '../src/protocol/onion.js'
import type { KdfParams } from '../src/protocol/vault.js'
import { createAccount, ensureDataDir, loadAccount, resolvePassphrase } from '../src/store/account.js'
import { accountPath, databasePath, defaultDataDir } from '../src/store/paths.js'

const CHEAP: KdfParams = { name: 'scrypt', N: 2 ** 10, r: 8, p: 1 }
const PASS = 'hunter2 but longer'

const roots: string[] = []
async function tempDir(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'p2pmess-account-'))
  roots.push(root)
  return join(root, 'data')
}
test.after.always(async () => {
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })))
})

async function storageCode(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn()
    return 'resolved'
  } catch (err) {
    return err instanceof StorageError ? err.code : `untyped: ${String(err)}`
  }
}

test('create then load: same keys, public fields derived from the secrets, modes 0600/0700', async (t) => {
  const dataDir = await tempDir()
  const created = await createAccount({ dataDir, passphrase: PASS, kdf: CHEAP, now: 1_700_000_000_000 })
  const loaded = await loadAccount({ dataDir, passphrase: PASS })
  for (const a of [created, loaded]) {
    t.is(a.peerId, peerIdFromIdentityKey(identityFromSeed(a.identitySeed).publicKey))
    t.deepEqual(a.identityKey, identityFromSeed(a.identitySeed).publicKey)
    t.deepEqual(a.noisePublic, x25519.getPublicKey(a.noiseSecret))
    t.is(a.onionAddress, onionServiceKeyFromSeed(a.onionSeed).address)
    t.is(a.createdAt, 1_700_000_000_000)
    t.is(a.recordSeq, 0)
  }
  t.deepEqual(loaded.identitySeed, created.identitySeed)
  t.deepEqual(loaded.noiseSecret, created.noiseSecret)
  t.deepEqual(loaded.onionSeed, created.onionSeed)
  t.notDeepEqual(created.identitySeed, created.onionSeed)
  t.is((await stat(accountPath(dataDir))).mode & 0o777, 0o600)
  t.is((await stat(dataDir)).mode & 0o777, 0o700)
  const other = await createAccount({ dataDir: await tempDir(), passphrase: PASS, kdf: CHEAP })
  t.not(other.peerId, created.peerId)
})

test('the account file holds no secret bytes in raw, hex or base64 forms', async (t) => {
  const dataDir = await tempDir()
  const a = await createAccount({ dataDir, passphrase: PASS, kdf: CHEAP })
  const raw = await readFile(accountPath(dataDir))
  const text = raw.toString('latin1')
  const onionKey = onionServiceKeyFromSeed(a.onionSeed)
  let searched = 0
  for (const secret of [a.identitySeed, a.noiseSecret, a.onionSeed, onionKey.expandedSecretKey]) {
    const b = Buffer.from(secret)
    t.is(raw.indexOf(b), -1)
    // Every 12-byte window, so a secret split or re-aligned inside an encoding is still found.
    for (let off = 0; off + 12 <= b.length; off += 4) {
      const w = b.subarray(off, off + 12)
      for (const form of [w.toString('hex'), w.toString('hex').toUpperCase(), w.toString('base64'), w.toString('base64url')]) {
        t.false(text.includes(form), form)
        searched++
      }
    }
  }
  t.false(text.includes(PASS))
  t.log(`${searched} encoded windows searched`)
})

test('a second create in the same directory fails with ERR_ACCOUNT_EXISTS, also when racing', async (t) => {
  const dataDir = await tempDir()
  await createAccount({ dataDir, passphrase: PASS, kdf: CHEAP })
  await t.throwsAsync(createAccount({ dataDir, passphrase: PASS, kdf: CHEAP }), { instanceOf: StorageError, code: 'ERR_ACCOUNT_EXISTS' })

  const raceDir = await tempDir()
  const results = await Promise.allSettled([1, 2, 3].map(() => createAccount({ dataDir: raceDir, passphrase: PASS, kdf: CHEAP })))
  const winners = results.filter((r) => r.status === 'fulfilled')
  t.is(winners.length, 1)
  for (const r of results) if (r.status === 'rejected') t.is((r.reason as StorageError).code, 'ERR_ACCOUNT_EXISTS')
  const loaded = await loadAccount({ dataDir: raceDir, passphrase: PASS })
  t.is(loaded.peerId, winners[0]?.status === 'fulfilled' ? winners[0].value.peerId : '')
})

test('load: no account, wrong passphrase, bad arguments', async (t) => {
  const dataDir = await tempDir()
  await t.throwsAsync(loadAccount({ dataDir, passphrase: PASS }), { instanceOf: StorageError, code: 'ERR_NO_ACCOUNT' })
  await createAccount({ dataDir, passphrase: PASS, kdf: CHEAP })
  const err = await t.throwsAsync(loadAccount({ dataDir, passphrase: 'hunter3 but longer' }), { instanceOf: StorageError })
  t.is(err?.code, 'ERR_WRONG_PASSPHRASE')
  t.regex(err?.message ?? '', /wrong passphrase/)
  await t.throwsAsync(loadAccount({ dataDir: '', passphrase: PASS }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(loadAccount({ dataDir, passphrase: '' }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(createAccount({ dataDir: await tempDir(), passphrase: '' }), { instanceOf: InvalidArgumentError })
})

test('every truncation and every flipped byte of account.json is a typed error', async (t) => {
  const dataDir = await tempDir()
  await createAccount({ dataDir, passphrase: PASS, kdf: CHEAP })
  const path = accountPath(dataDir)
  const original = await readFile(path)
  const file = JSON.parse(original.toString('utf8')) as Record<string, unknown>
  const publicRanges = ['peerId', 'identityKey', 'noiseKey', 'onion', 'mac'].map((k) => {
    const value = String(file[k])
    const start = original.indexOf(`"${value}"`) + 1
    return [start, start + value.length] as const
  })
  const counts = new Map<string, number>()
  let cases = 0
  const check = async (bytes: Uint8Array, label: string, expectCorrupt: boolean) => {
    await writeFile(path, bytes)
    const code = await storageCode(() => loadAccount({ dataDir, passphrase: PASS }))
    counts.set(code, (counts.get(code) ?? 0) + 1)
    cases++
    if (expectCorrupt) t.is(code, 'ERR_STORAGE_CORRUPT', label)
    else t.true(code === 'ERR_STORAGE_CORRUPT' || code === 'ERR_WRONG_PASSPHRASE', `${label}: ${code}`)
  }
  // The file ends in "}\n": dropping only the newline leaves a valid file, so truncate from there on.
  for (let len = 0; len < original.length - 1; len++) await check(original.subarray(0, len), `truncated to ${len}`, true)
  for (let i = 0; i < original.length; i++) {
    const copy = Uint8Array.from(original)
    copy[i]! ^= 0x01
    const inPublic = publicRanges.some(([s, e]) => i >= s && i < e)
    await check(copy, `byte ${i} flipped`, inPublic)
  }
  t.log(`${cases} corrupted files: ${JSON.stringify(Object.fromEntries(counts))}`)
  await writeFile(path, original)
  await t.notThrowsAsync(loadAccount({ dataDir, passphrase: PASS }))
})

test('edited public fields (peer ID, keys, onion, createdAt, recordSeq, swapped secrets) are ERR_STORAGE_CORRUPT', async (t) => {
  const dataDir = await tempDir()
  await createAccount({ dataDir, passphrase: PASS, kdf: CHEAP })
  const otherDir = await tempDir()
  await createAccount({ dataDir: otherDir, passphrase: PASS, kdf: CHEAP })
  const path = accountPath(dataDir)
  const mine = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>
  const theirs = JSON.parse(await readFile(accountPath(otherDir), 'utf8')) as Record<string, unknown>
  const edits: Record<string, unknown>[] = [
    { peerId: theirs.peerId },
    { identityKey: theirs.identityKey },
    { noiseKey: theirs.noiseKey },
    { onion: theirs.onion },
    { secrets: theirs.secrets },
    { createdAt: 1 },
    { recordSeq: 99 },
    { mac: theirs.mac },
    { peerId: theirs.peerId, identityKey: theirs.identityKey, noiseKey: theirs.noiseKey, onion: theirs.onion, mac: theirs.mac },
    { extra: true },
    { v: 2 },
  ]
  for (const edit of edits) {
    await writeFile(path, JSON.stringify({ ...mine, ...edit }))
    const err = await t.throwsAsync(loadAccount({ dataDir, passphrase: PASS }), { instanceOf: StorageError }, JSON.stringify(Object.keys(edit)))
    t.is(err?.code, 'ERR_STORAGE_CORRUPT', JSON.stringify(Object.keys(edit)))
    t.regex(err?.message ?? '', /account file is damaged|envelope/)
  }
})

test('nextRecordSeq persists, is monotonic under concurrency, and keeps the file loadable', async (t) => {
  const dataDir = await tempDir()
  const a = await createAccount({ dataDir, passphrase: PASS, kdf: CHEAP })
  t.is(await a.nextRecordSeq(), 1)
  const seqs = await Promise.all([a.nextRecordSeq(), a.nextRecordSeq(), a.nextRecordSeq()])
  t.deepEqual(seqs, [2, 3, 4])
  const b = await loadAccount({ dataDir, passphrase: PASS })
  t.is(b.recordSeq, 4)
  t.is(await b.nextRecordSeq(), 5)
  // An older in-memory copy never goes backwards: it continues from the file.
  t.is(await a.nextRecordSeq(), 6)
  t.is((await stat(accountPath(dataDir))).mode & 0o777, 0o600)
  t.is((await loadAccount({ dataDir, passphrase: PASS })).recordSeq, 6)
})

test('wipe zeroes the secrets', async (t) => {
  const a = await createAccount({ dataDir: await tempDir(), passphrase: PASS, kdf: CHEAP })
  a.wipe()
  for (const s of [a.identitySeed, a.noiseSecret, a.onionSeed]) t.true(s.every((b) => b === 0))
  await t.throwsAsync(a.nextRecordSeq(), { instanceOf: InvalidArgumentError })
})

test('ensureDataDir tightens an existing directory to 0700', async (t) => {
  const dataDir = await tempDir()
  await mkdir(dataDir, { recursive: true, mode: 0o755 })
  await chmod(dataDir, 0o755)
  await ensureDataDir(dataDir)
  t.is((await stat(dataDir)).mode & 0o777, 0o700)
})

test('resolvePassphrase: file (one trailing newline removed), env, prompt, precedence, none', async (t) => {
  const dir = await tempDir()
  await mkdir(dir, { recursive: true })
  const file = join(dir, 'pass')
  await writeFile(file, 'from file\n')
  t.is(await resolvePassphrase({ passphraseFile: file, env: 'from env', prompt: async () => 'typed' }), 'from file')
  await writeFile(file, 'crlf\r\n')
  t.is(await resolvePassphrase({ passphraseFile: file }), 'crlf')
  await writeFile(file, 'two\n\n')
  t.is(await resolvePassphrase({ passphraseFile: file }), 'two\n')
  await writeFile(file, ' spaces kept ')
  t.is(await resolvePassphrase({ passphraseFile: file }), ' spaces kept ')
  t.is(await resolvePassphrase({ env: 'from env', prompt: async () => 'typed' }), 'from env')
  t.is(await resolvePassphrase({ env: undefined, prompt: async () => 'typed' }), 'typed')
  t.is(await resolvePassphrase({ env: '', prompt: async () => 'typed' }), 'typed')

  const none = await t.throwsAsync(resolvePassphrase({ env: undefined }), { instanceOf: StorageError })
  t.is(none?.code, 'ERR_NO_PASSPHRASE')
  t.regex(none?.message ?? '', /P2PMESS_PASSPHRASE/)
  await t.throwsAsync(resolvePassphrase({ env: undefined, prompt: async () => '' }), { instanceOf: StorageError, code: 'ERR_NO_PASSPHRASE' })
  await writeFile(file, '\n')
  await t.throwsAsync(resolvePassphrase({ passphraseFile: file }), { instanceOf: StorageError, code: 'ERR_NO_PASSPHRASE' })
  await writeFile(file, new Uint8Array([0xff, 0xfe]))
  await t.throwsAsync(resolvePassphrase({ passphraseFile: file }), { instanceOf: StorageError, code: 'ERR_STORAGE_IO' })
  const missing = await t.throwsAsync(resolvePassphrase({ passphraseFile: join(dir, 'missing') }), { instanceOf: StorageError })
  t.is(missing?.code, 'ERR_STORAGE_IO')
  t.regex(missing?.message ?? '', /ENOENT/)

  const saved = process.env.P2PMESS_PASSPHRASE
  process.env.P2PMESS_PASSPHRASE = 'process env'
  try {
    t.is(await resolvePassphrase(), 'process env')
  } finally {
    if (saved === undefined) delete process.env.P2PMESS_PASSPHRASE
    else process.env.P2PMESS_PASSPHRASE = saved
  }
})

test('defaultDataDir follows P2PMESS_DATA_DIR, then XDG_DATA_HOME, then ~/.local/share', (t) => {
  t.is(defaultDataDir({ P2PMESS_DATA_DIR: '/srv/p2p', XDG_DATA_HOME: '/x', HOME: '/home/u' }), '/srv/p2p')
  t.is(defaultDataDir({ XDG_DATA_HOME: '/x/data', HOME: '/home/u' }), '/x/data/p2pmess')
  t.is(defaultDataDir({ XDG_DATA_HOME: 'relative', HOME: '/home/u' }), '/home/u/.local/share/p2pmess')
  t.is(defaultDataDir({ XDG_DATA_HOME: '', P2PMESS_DATA_DIR: '', HOME: '/home/u' }), '/home/u/.local/share/p2pmess')
  t.true(defaultDataDir({ P2PMESS_DATA_DIR: 'rel/dir' }).startsWith('/'))
  t.is(databasePath('/d'), '/d/db')
  t.is(accountPath('/d'), '/d/account.json')
})
