/**
 * Pre-auth resources: what a socket may hold before it has said who it is.
 *
 * In this order, for each accepted socket:
 * 1. it is *pending* until its request headers have arrived (Node's header timeout, set by
 *    the app, closes it if they never do);
 * 2. a client (client-key.ts: loopback is one client) holding `maxPendingPerClient` pending
 *    sockets has its **oldest** pending socket closed — a stalled socket is old, a health
 *    probe is new, so a slowloris from the same address never locks the probe out;
 * 3. past `maxSockets` sockets in all, the oldest pending socket of anyone is closed; when none
 *    is pending (every socket is a real connection), the new socket is closed instead.
 *
 * `maxSockets` is the WebSocket cap plus headroom: upgrades are refused (503) at the cap by
 * the route, so the headroom is always left for health probes and refusals.
 */
import { clientKey } from './client-key.js'

export interface GuardedSocket {
  destroy(): void
  once(event: 'close', listener: () => void): unknown
}

export interface SocketGuardLimits {
  readonly maxSockets: number
  readonly maxPendingPerClient: number
}

export class SocketGuard<S extends GuardedSocket = GuardedSocket> {
  private readonly pending = new Map<string, Set<S>>()
  private readonly keyOf = new Map<S, string>()
  /** Sockets counted as open: one closed by the guard stops counting at once, not at its `close`. */
  private readonly live = new Set<S>()
  private evicted = 0

  constructor(private readonly limits: SocketGuardLimits) {}

  /** Sockets open now. */
  get size(): number {
    return this.live.size
  }

  /** Sockets waiting for their request headers now. */
  get pendingCount(): number {
    return this.keyOf.size
  }

  /** Sockets closed by rules 2 and 3 so far. */
  get closedCount(): number {
    return this.evicted
  }

  /** A socket was accepted from `remoteAddress` (rules 1 to 3). */
  accepted(socket: S, remoteAddress: string | undefined): void {
    const key = clientKey(remoteAddress ?? '')
    let mine = this.pending.get(key)
    if (mine !== undefined && mine.size >= this.limits.maxPendingPerClient) this.close(mine.values().next().value!)
    if (this.live.size >= this.limits.maxSockets) {
      const oldest = this.keyOf.keys().next()
      if (oldest.done === true) {
        this.evicted++
        socket.destroy()
        return
      }
      this.close(oldest.value)
    }
    this.live.add(socket)
    socket.once('close', () => {
      this.live.delete(socket)
      this.requested(socket)
    })
    mine = this.pending.get(key)
    if (mine === undefined) this.pending.set(key, (mine = new Set()))
    mine.add(socket)
    this.keyOf.set(socket, key)
  }

  /** The socket's request headers have arrived: it is no longer pending. */
  requested(socket: S): void {
    const key = this.keyOf.get(socket)
    if (key === undefined) return
    this.keyOf.delete(socket)
    const mine = this.pending.get(key)
    mine?.delete(socket)
    if (mine?.size === 0) this.pending.delete(key)
  }

  private close(socket: S): void {
    this.evicted++
    this.live.delete(socket)
    this.requested(socket)
    socket.destroy()
  }
}

/** Files kept free beyond the sockets: logs, the state directory, the engine's control link. */
export const FILE_HEADROOM = 256
/** Sockets beyond the WebSocket cap, kept for health probes and refusals. */
export const PROBE_HEADROOM = 64

/**
 * The WebSocket cap: the configured one, or what the open-file limit allows — each connection
 * costs one file, two with an engine (its upstream) — whichever is lower.
 */
export function connectionCap(configured: number, openFiles: number | null, filesPerConnection: number): number {
  const derived = openFiles === null ? null : Math.max(1, Math.floor((openFiles - FILE_HEADROOM - PROBE_HEADROOM) / filesPerConnection))
  if (configured === 0) return derived ?? 10_000
  return derived === null ? configured : Math.min(configured, derived)
}
