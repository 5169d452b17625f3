/**
 * Publishing a v3 onion service with a key we own, through tor's control port.
 *
 * "Published" means a descriptor was actually uploaded to an HSDir: ADD_ONION (control-spec §3.27) only makes
 * tor start building intro circuits, so we wait for the `HS_DESC UPLOADED` event (control-spec §4.1.25) for the
 * service's address. The controller subscribes to HS_DESC before ADD_ONION is sent, so the event cannot slip by.
 */
import { InvalidArgumentError, TorError } from '../errors.js'
import { canonicalOnionAddress, onionAddressFromPublicKey, publicKeyFromExpandedSecretKey, torOnionKeyBlob } from '../protocol/onion.js'
import { TorController } from './controller.js'

export interface OnionServiceSpec {
  /** tor's 64-byte expanded Ed25519 secret key (see onionServiceKeyFromSeed). Secret; not kept. */
  expandedSecretKey: Uint8Array
  /** Port visitors dial on the onion address. */
  virtualPort: number
  /** Local port on 127.0.0.1 that tor forwards visitors to. */
  targetPort: number
}

export interface PublishOnionOptions extends OnionServiceSpec {
  /** Whole publication: SETEVENTS, ADD_ONION and the wait for the first descriptor upload. */
  timeoutMs: number
  /** tor's recent [warn]/[err] lines (e.g. TorProcess.lastWarnings), quoted when publication times out. */
  lastWarnings?: () => readonly string[]
}

export interface PublishedOnion {
  /** '<56 base32 chars>.onion' */
  address: string
}

const MAX_TIMEOUT_MS = 2 ** 31 - 1
const SUFFIX = '.onion'

function checkPort(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new InvalidArgumentError(`${name} must be an integer port 1-65535, got ${String(value)}`)
  }
  return value
}

export function checkTimeoutMs(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_TIMEOUT_MS) {
    throw new InvalidArgumentError(`${name} must be an integer number of milliseconds ≥ 1, got ${String(value)}`)
  }
  return value
}

/**
 * Validates a service spec and returns it with the address its key gives. Throws InvalidArgumentError, or
 * CryptoError ERR_KEY_FORMAT for a 64-byte key that is not a clamped Ed25519 scalar.
 */
export function checkOnionServiceSpec(spec: OnionServiceSpec, name = 'options'): OnionServiceSpec & PublishedOnion {
  if (spec === null || typeof spec !== 'object') throw new InvalidArgumentError(`${name} must be an object`)
  const address = onionAddressFromPublicKey(publicKeyFromExpandedSecretKey(spec.expandedSecretKey))
  return {
    expandedSecretKey: spec.expandedSecretKey,
    virtualPort: checkPort(spec.virtualPort, `${name}.virtualPort`),
    targetPort: checkPort(spec.targetPort, `${name}.targetPort`),
    address,
  }
}

function checkController(controller: unknown): asserts controller is TorController {
  if (!(controller instanceof TorController)) throw new InvalidArgumentError('controller must be a TorController')
}

/**
 * `ADD_ONION ED25519-V3:<key> Flags=Detach Port=<virtualPort>,127.0.0.1:<targetPort>`, resolving once tor reports
 * the descriptor uploaded. Leaves the controller subscribed to HS_DESC only (SETEVENTS replaces the set).
 *
 * Fails with TorError ERR_ONION_PUBLISH_TIMEOUT (naming the address, HSDir upload failures and tor's last
 * warnings) after `timeoutMs`, with ERR_CONTROL_CLOSED if tor goes away, or with ERR_CONTROL_FAILED if tor
 * refuses the service (e.g. 550 when this key is already being served). A service added here whose publication
 * then fails is removed again, so a later attempt starts clean.
 */
export async function publishOnionService(controller: TorController, options: PublishOnionOptions): Promise<PublishedOnion> {
  checkController(controller)
  const spec = checkOnionServiceSpec(options)
  const timeoutMs = checkTimeoutMs(options.timeoutMs, 'options.timeoutMs')
  const lastWarnings = options.lastWarnings
  if (lastWarnings !== undefined && typeof lastWarnings !== 'function') throw new InvalidArgumentError('options.lastWarnings must be a function')
  const { address } = spec
  const serviceId = address.slice(0, -SUFFIX.length)
  const blob = torOnionKeyBlob(spec.expandedSecretKey).slice('ED25519-V3:'.length)

  const uploadFailures: string[] = []
  // Only uploads after tor accepted our ADD_ONION count: when the key is already served, that service's own
  // uploads (still going on to other HSDirs) must not pass for ours while tor's refusal is on its way.
  let accepted = false
  let timer: NodeJS.Timeout | undefined
  let unsubscribe = (): void => {}
  const uploaded = new Promise<void>((resolve, reject) => {
    timer = setTimeout(() => {
      const warnings = lastWarnings?.() ?? []
      const failed = uploadFailures.length === 0 ? 'no HSDir upload reported' : `HSDir uploads failed: ${uploadFailures.slice(-3).join(', ')}`
      const told = warnings.length === 0 ? '' : `; tor's last warnings: ${warnings.slice(-3).join(' | ')}`
      reject(new TorError('ERR_ONION_PUBLISH_TIMEOUT', `onion service ${address} was not published within ${timeoutMs} ms (${failed})${told}`, {
        details: { address, timeoutMs, uploadFailures: [...uploadFailures], lastWarnings: [...warnings] },
      }))
    }, timeoutMs)
    unsubscribe = controller.onEvent((e) => {
      if (e.type !== 'hs_desc' || e.address !== serviceId || !accepted) return
      if (e.action === 'UPLOADED') resolve()
      else if (e.action === 'FAILED') uploadFailures.push(e.reason ?? 'UNKNOWN')
    })
    void controller.closed.then(() =>
      reject(new TorError('ERR_CONTROL_CLOSED', `tor's control connection closed while publishing onion service ${address}`)),
    )
  })
  uploaded.catch(() => {})

  // A collision (our key already served) rejects `added`; only a service this call created is removed on failure.
  const added = Promise.race([controller.setEvents(['HS_DESC']), uploaded]).then(() =>
    controller.addOnion({
      key: { type: 'ed25519-v3', blob },
      ports: [{ virtualPort: spec.virtualPort, target: `127.0.0.1:${spec.targetPort}` }],
      flags: ['Detach'],
    }),
  ).then((result) => {
    accepted = true
    return result
  })
  added.catch(() => {})
  try {
    await Promise.race([added, uploaded])
    await uploaded
    return { address }
  } catch (err) {
    if (await added.then(() => true, () => false)) await controller.delOnion(serviceId).catch(() => {})
    throw err
  } finally {
    clearTimeout(timer)
    unsubscribe()
  }
}

/** `DEL_ONION` (control-spec "DEL_ONION"): tor stops serving `address` (with or without ".onion"). */
export async function removeOnionService(controller: TorController, address: string): Promise<void> {
  checkController(controller)
  const canonical = canonicalOnionAddress(address)
  await controller.delOnion(canonical.slice(0, -SUFFIX.length))
}
