/**
 * The directory as an onion service on the private test network: a record published and looked up through a
 * second tor's SOCKS agent over the onion address, the same address (and the stored record) after a restart,
 * and the persistent onion key file.
 */
import { readFile, stat, writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { x25519 } from '@noble/curves/ed25519.js'
import { DirectoryClient } from '../src/directory-client.js'
import { P2PMessError } from '../src/errors.js'
import { generateIdentity, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { onionAddressFromPublicKey, publicKeyFromExpandedSecretKey } from '../src/protocol/onion.js'
import { createRecord } from '../src/protocol/record.js'
import { createTorDialer, type TorDialer } from '../src/tor/dialer.js'
import { ONION_KEY_FILE, loadOrCreateOnionKey, startOnionDirectory } from '../directory/onion.js'
import { startDirectoryServer } from '../directory/server.js'
import { alive, atFileEnd, fileTempDir, startFileTor, testNetwork } from './helpers/tor.js'

const tempDir = (): Promise<string> => fileTempDir('p2pmess-dironion-')

let visitorDialer: Promise<TorDialer> | undefined
/** A client tor on the network whose SOCKS agent the directory clients use. */
function visitor(): Promise<TorDialer> {
  visitorDialer ??= startFileTor().then((tor) => createTorDialer({ socksPort: tor.socksPort }))
  return visitorDialer
}

/**
 * Waits until the onion answers at all (its descriptor may not be fetchable for a few seconds after upload). After a
 * restart of the same service, the visitor tor may still hold the old descriptor, whose intro points are gone; its
 * requests then stall until tor gives up on them and refetches — usually seconds, rarely minutes on a busy machine.
 */
async function reachable(dialer: TorDialer, address: string): Promise<void> {
  const socket = await dialer.dialWithRetry(address, 80, { deadlineMs: 240_000 })
  socket.destroy()
}

test('a record round-trips through the directory\'s onion address; after a restart the address and the record are the same', async (t) => {
  const [dialer, network] = await Promise.all([visitor(), testNetwork()])
  const dataDir = await tempDir()
  const dbPath = join(await tempDir(), 'db')
  const progress: string[] = []
  const started = performance.now()
  const dir = await startOnionDirectory({ dbPath, dataDir, network, onProgress: (m) => progress.push(m) })
  const startMs = performance.now() - started
  atFileEnd(() => dir.close())
  t.regex(dir.onionUrl, /^http:\/\/[a-z2-7]{56}\.onion$/)
  t.is(dir.onionUrl, `http://${dir.address}`)
  t.regex(dir.localUrl, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.true(progress.some((m) => m.includes('bootstrapped 100%')))
  t.true(progress.includes(`directory: published at ${dir.onionUrl}`))
  const keyFile = join(dataDir, ONION_KEY_FILE)
  t.is((await stat(keyFile)).mode & 0o777, 0o600)

  await reachable(dialer, dir.address)
  const { seed, publicKey } = generateIdentity()
  const onion = onionAddressFromPublicKey(generateIdentity().publicKey)
  const record = createRecord({ identitySeed: seed, onion, noiseKey: x25519.keygen().publicKey, seq: 1, expires: Math.floor(Date.now() / 1000) + 3600 })
  const client = new DirectoryClient({ urls: [dir.onionUrl], agent: dialer.agent(), timeoutMs: 60_000 })
  const published = await client.publish(record)
  t.like(published, [{ url: dir.onionUrl, ok: true }])
  const id = peerIdFromIdentityKey(publicKey)
  const found = await client.lookup(id, { fresh: true })
  t.deepEqual(found.record, record)

  const pid = dir.supervisor.pid
  const address = dir.address
  await dir.close()
  await dir.close()
  t.is(dir.supervisor.state, 'stopped')
  t.false(alive(pid), 'close() leaves no tor running')

  const restartedAt = performance.now()
  const again = await startOnionDirectory({ dbPath, dataDir, network })
  atFileEnd(() => again.close())
  t.is(again.address, address)
  await reachable(dialer, again.address)
  const reachMs = performance.now() - restartedAt
  const fresh = new DirectoryClient({ urls: [again.onionUrl], agent: dialer.agent(), timeoutMs: 60_000 })
  t.deepEqual((await fresh.lookup(id)).record, record)
  t.log(`first start (tor + publish) ${startMs.toFixed(0)} ms; restart to reachable over the same onion ${reachMs.toFixed(0)} ms`)
})

test('the onion key is created once (0600), reused, its mode repaired, and a corrupt file is a typed error', async (t) => {
  const dataDir = join(await tempDir(), 'nested')
  const key = await loadOrCreateOnionKey(dataDir)
  const path = join(dataDir, ONION_KEY_FILE)
  t.is((await stat(path)).mode & 0o777, 0o600)
  t.is((await stat(dataDir)).mode & 0o777, 0o700)
  t.regex(await readFile(path, 'utf8'), /^ED25519-V3:[A-Za-z0-9+/]{86}==\n$/)
  const address = onionAddressFromPublicKey(publicKeyFromExpandedSecretKey(key))
  await chmod(path, 0o644)
  const reread = await loadOrCreateOnionKey(dataDir)
  t.is(onionAddressFromPublicKey(publicKeyFromExpandedSecretKey(reread)), address)
  t.is((await stat(path)).mode & 0o777, 0o600)

  for (const bad of ['', 'ED25519-V3:short==\n', 'garbage\n', (await readFile(path, 'utf8')).replace('ED25519-V3:', 'RSA1024:')]) {
    await writeFile(path, bad)
    const err = await t.throwsAsync(loadOrCreateOnionKey(dataDir))
    t.is((err as P2PMessError).code, 'ERR_STORAGE_CORRUPT')
  }
  await t.throwsAsync(loadOrCreateOnionKey(''), { code: 'ERR_INVALID_ARGUMENT' })
})

test('if tor cannot start, the directory fails with ERR_TOR_NOT_FOUND and releases its store', async (t) => {
  const dbPath = join(await tempDir(), 'db')
  const err = await t.throwsAsync(startOnionDirectory({ dbPath, dataDir: await tempDir(), torPath: '/nonexistent/tor' }))
  t.is((err as P2PMessError).code, 'ERR_TOR_NOT_FOUND')
  t.regex(err?.message ?? '', /apt-get install tor/)
  // The level store was closed: another server can open the same database.
  const server = await startDirectoryServer({ dbPath })
  t.regex(server.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  await server.close()
})
