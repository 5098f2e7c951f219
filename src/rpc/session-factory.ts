import type { Principal } from '../auth/principal.js'
import type { Clock } from '../clock.js'
import type { AppLogger } from '../log/logger.js'
import type { Dispatcher } from './dispatcher.js'
import type { SessionRegistry } from './registry.js'
import { Session, type SessionDeps, type SessionSettings, type SessionTransport } from './session.js'

/** Where a session's client is: on a local socket, or behind remote control. */
export type SessionOrigin = 'local' | 'remote'

const ID_PREFIX: Record<SessionOrigin, string> = { local: 'c', remote: 'r' }

/**
 * The one place an app makes sessions, for local sockets and remote virtual connections alike.
 * Every session of the app shares its settings and its registry, and gets an id unique within
 * the app: `c1`, `c2`, … for local sockets, `r1`, … for remote clients.
 *
 * The dispatcher is the last piece, and comes late on purpose: it serves the methods of
 * services (remote control) that themselves open sessions, so it can only be built after them.
 * `useDispatcher` hands it over once, while the app is built; sessions are opened only once
 * clients arrive, after that. Opening one earlier is a wiring mistake and throws.
 */
export class SessionFactory {
  private deps: SessionDeps | null = null
  private readonly counters: Record<SessionOrigin, number> = { local: 0, remote: 0 }

  constructor(
    private readonly settings: SessionSettings,
    private readonly registry: SessionRegistry,
  ) {}

  useDispatcher(dispatcher: Dispatcher<any>): void {
    if (this.deps !== null) throw new Error('the session factory already has its dispatcher')
    this.deps = { ...this.settings, dispatcher }
  }

  /** The clock every session of the app schedules with (their transports too). */
  get clock(): Clock {
    return this.settings.clock
  }

  /** The id of the next session from `origin` (taken before the session exists, for the admission log). */
  nextId(origin: SessionOrigin): string {
    return `${ID_PREFIX[origin]}${++this.counters[origin]}`
  }

  /** A new session, in the registry until `ended`. */
  open(id: string, principal: Principal, transport: SessionTransport, log: AppLogger): Session {
    if (this.deps === null) throw new Error('a session was opened before the dispatcher was built')
    const session = new Session(id, principal, transport, log, this.deps)
    this.registry.add(session)
    return session
  }

  /** The session's transport is gone: it leaves the registry (broadcasts, shutdown). */
  ended(session: Session): void {
    this.registry.remove(session)
  }
}
