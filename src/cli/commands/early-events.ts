/**
 * startClient reports from the very start (bootstrap, ready, published) through its `onEvent` option, but the
 * UI or the headless loop can only subscribe once it has the handle. EarlyEvents keeps what came before and hands
 * it, in order, to the first subscriber of the wrapped handle, then passes events straight through.
 */
import type { ClientEvent, ClientHandle } from '../../client/api.js'

/** Start-up produces a few dozen events; this only bounds a client that never gets a subscriber. */
const MAX_EARLY_EVENTS = 10_000

export class EarlyEvents {
  readonly #buffer: ClientEvent[] = []
  readonly #listeners = new Set<(event: ClientEvent) => void>()
  /** Until the first subscriber takes over (and while its backlog is being delivered), events are buffered. */
  #mode: 'buffering' | 'flushing' | 'live' = 'buffering'
  readonly #onEarly: ((event: ClientEvent) => void) | undefined
  readonly #keep: (event: ClientEvent) => boolean

  /**
   * `onEarly` sees each event that arrives before anyone subscribed (e.g. to print start-up progress); `keep`
   * decides which of them go into the backlog (default: all).
   */
  constructor(options: { onEarly?: (event: ClientEvent) => void; keep?: (event: ClientEvent) => boolean } = {}) {
    this.#onEarly = options.onEarly
    this.#keep = options.keep ?? (() => true)
  }

  /** Pass this as startClient's `onEvent`. */
  readonly onEvent = (event: ClientEvent): void => {
    if (this.#mode === 'live') {
      for (const listener of this.#listeners) listener(event)
      return
    }
    if (!this.#keep(event)) return
    if (this.#mode === 'buffering') this.#onEarly?.(event)
    if (this.#buffer.length < MAX_EARLY_EVENTS) this.#buffer.push(event)
  }

  #subscribe(listener: (event: ClientEvent) => void): () => void {
    this.#listeners.add(listener)
    if (this.#mode === 'buffering') {
      this.#mode = 'flushing'
      // Delivered after the subscriber's own set-up has finished; events arriving meanwhile queue behind.
      queueMicrotask(() => {
        for (const event of this.#buffer.splice(0)) for (const l of this.#listeners) l(event)
        this.#mode = 'live'
      })
    }
    return () => void this.#listeners.delete(listener)
  }

  /** The same client, whose onEvent also delivers the start-up backlog to the first subscriber. */
  wrap(handle: ClientHandle): ClientHandle {
    return {
      get peerId() {
        return handle.peerId
      },
      onEvent: (listener) => this.#subscribe(listener),
      dispatch: (intent) => handle.dispatch(intent),
      contacts: () => handle.contacts(),
      stop: () => handle.stop(),
    }
  }
}

/** One progress line for stderr from a start-up event, or undefined for events not worth a line (a tor failure comes as an `error` too). */
export function startupLine(event: ClientEvent): string | undefined {
  switch (event.type) {
    case 'bootstrap':
      return `tor: bootstrapped ${event.progress}% (${event.summary})`
    case 'ready':
      return `onion service up: ${event.onion}`
    case 'published':
      return `record published to ${event.directories} director${event.directories === 1 ? 'y' : 'ies'}`
    case 'error':
      return `error: ${event.message} [${event.code}]`
    default:
      return undefined
  }
}
