import type { WarnSink } from '../log/warn-budget.js'
import type { Clock } from '../clock.js'
import { loggableId } from '../util/client-text.js'
import type { RpcErrorBody } from './wire.js'

/** The client answered a server request with an error. */
export class ServerRequestError extends Error {
  override name = 'ServerRequestError'
  constructor(readonly error: RpcErrorBody) {
    super(`code=${error.code} message=${error.message}`)
  }
}

/** No answer within the timeout. */
export class ServerRequestTimeout extends Error {
  override name = 'ServerRequestTimeout'
  constructor(readonly method: string, readonly timeoutMs: number) {
    super(`${method} timed out after ${timeoutMs}ms`)
  }
}

/** The connection went away before it answered. */
export class ServerRequestAborted extends Error {
  override name = 'ServerRequestAborted'
  constructor(readonly method: string) {
    super(`connection closed before ${method} was answered`)
  }
}

/** Server request ids are integers from 0, unique across the whole server (as codex). */
export class RequestIdAllocator {
  private next = 0
  allocate(): number {
    return this.next++
  }
}

interface Pending {
  readonly method: string
  readonly resolve: (result: unknown) => void
  readonly reject: (err: Error) => void
  readonly timer: unknown
}

/**
 * The requests one connection's server side has sent to its client and still awaits.
 * A reply after the timeout finds nothing pending: it is logged (its id bounded: the client
 * chose it) and dropped. The session hands in a `WarnBudget`, so such lines are bounded too.
 */
export class ServerRequests {
  private readonly pending = new Map<number, Pending>()

  constructor(
    private readonly ids: RequestIdAllocator,
    private readonly clock: Clock,
    private readonly log: WarnSink,
  ) {}

  get size(): number {
    return this.pending.size
  }

  /** Sends via `send(id)` and resolves with the client's `result`. */
  request(method: string, timeoutMs: number, send: (id: number) => void): Promise<unknown> {
    const id = this.ids.allocate()
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        if (this.pending.delete(id)) reject(new ServerRequestTimeout(method, timeoutMs))
      }, timeoutMs)
      this.pending.set(id, { method, resolve, reject, timer })
      try {
        send(id)
      } catch (err) {
        this.settle(id)
        reject(err)
      }
    })
  }

  /** Whether `id` names a request still awaiting its reply. */
  awaits(id: unknown): boolean {
    return typeof id === 'number' && this.pending.has(id)
  }

  /** A `{id, result}` from the client. Returns false when nothing was waiting for it. */
  resolve(id: unknown, result: unknown): boolean {
    const p = typeof id === 'number' ? this.settle(id) : undefined
    if (p === undefined) {
      this.log.warn({ id: loggableId(id) }, 'dropped late or unknown reply to a server request')
      return false
    }
    p.resolve(result)
    return true
  }

  /** An `{id, error}` from the client. */
  reject(id: unknown, error: RpcErrorBody): boolean {
    const p = typeof id === 'number' ? this.settle(id) : undefined
    if (p === undefined) {
      this.log.warn({ id: loggableId(id) }, 'dropped late or unknown error reply to a server request')
      return false
    }
    p.reject(new ServerRequestError(error))
    return true
  }

  /** The connection closed: every waiting request fails at once. */
  abortAll(): void {
    for (const [id, p] of this.pending) {
      this.clock.clearTimeout(p.timer)
      this.pending.delete(id)
      p.reject(new ServerRequestAborted(p.method))
    }
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id)
    if (p === undefined) return undefined
    this.pending.delete(id)
    this.clock.clearTimeout(p.timer)
    return p
  }
}
