/**
 * The client's public surface: the events it emits and the intents it accepts. The terminal UI, the headless
 * JSON-lines mode and the tests all speak this and nothing else; none of them touch tor or sockets.
 * docs/HEADLESS.md documents these shapes as the stable headless protocol.
 */

/** Where a contact stands, from the user's point of view. */
export type Presence =
  /** No session yet and none is being made (initial state, or after we gave up for now). */
  | 'offline'
  /** A dial or handshake is in progress. */
  | 'connecting'
  /** A session is up and heartbeats are answered. */
  | 'online'
  /** A session was up but heartbeats stopped being answered; it was torn down and redial is scheduled. */
  | 'unreachable'

/**
 * How far the relationship with a contact has come.
 * - `pending`: we added them; we talk to them as soon as they are reachable.
 * - `request`: they called us and we have not answered; nothing from them is shown yet.
 * - `accepted`: both sides may exchange messages.
 * - `refused`: we turned down their request; further calls are dropped.
 */
export type ContactState = 'pending' | 'request' | 'accepted' | 'refused'

export interface ContactView {
  peerId: string
  name?: string
  state: ContactState
  presence: Presence
  /** Last measured heartbeat round trip, in milliseconds. */
  rttMs?: number
  /** Safety number of our identity and theirs, for out-of-band verification. */
  safetyNumber: string
  /** Messages waiting in the outbox for this contact. */
  queued: number
}

export type MessageStatus = 'queued' | 'sent' | 'delivered' | 'received'

export interface MessageView {
  peerId: string
  /** base64url, 128-bit random message ID. */
  id: string
  direction: 'in' | 'out'
  body: string
  /** Unix ms: when the author wrote it. */
  at: number
  status: MessageStatus
}

export type TorState = 'starting' | 'ready' | 'restarting' | 'stopped' | 'failed'

export type ClientEvent =
  | { type: 'bootstrap'; progress: number; summary: string }
  | { type: 'tor'; state: TorState; detail?: string }
  | { type: 'ready'; peerId: string; onion: string }
  | { type: 'published'; seq: number; directories: number }
  | { type: 'contact'; contact: ContactView }
  | { type: 'presence'; peerId: string; presence: Presence; rttMs?: number }
  | { type: 'request'; peerId: string }
  | { type: 'message'; message: MessageView }
  | { type: 'delivered'; peerId: string; id: string }
  | { type: 'error'; code: string; message: string; peerId?: string }

export type ClientIntent =
  | { cmd: 'add'; peerId: string; name?: string }
  | { cmd: 'accept'; peerId: string }
  | { cmd: 'refuse'; peerId: string }
  | { cmd: 'send'; peerId: string; body: string }
  | { cmd: 'contacts' }
  | { cmd: 'history'; peerId: string; limit?: number }
  | { cmd: 'retry'; peerId?: string }
  | { cmd: 'quit' }

/** What an intent produced: `send` gives the new message's ID; a refused intent gives a typed error code. */
export type IntentResult =
  | { ok: true; id?: string; contacts?: ContactView[]; messages?: MessageView[] }
  | { ok: false; code: string; message: string }

/** A running client, as the UI and headless mode see it. */
export interface ClientHandle {
  readonly peerId: string
  onEvent(listener: (event: ClientEvent) => void): () => void
  dispatch(intent: ClientIntent): Promise<IntentResult>
  contacts(): ContactView[]
  stop(): Promise<void>
}
