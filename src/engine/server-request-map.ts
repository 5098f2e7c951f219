/**
 * The engine's requests to one client, under the ids the client sees.
 *
 * Each engine request gets a fresh id from the gateway's process-wide allocator, so it can
 * never collide with a server request the gateway sends itself, nor with another client's
 * engine requests (two engines' — or one engine's two connections' — id 0 become different
 * ids). The client's reply names the client id; `take` turns it back into the engine's.
 *
 * After the reply, the engine still announces `serverRequest/resolved` with its own id: the
 * mapping is remembered for that (the most recent `RESOLVED_MEMORY` only, as an engine is not
 * bound to announce every resolution).
 */
import type { RequestIdAllocator } from '../rpc/server-requests.js'
import type { RequestId } from '../rpc/wire.js'

export interface EngineRequest {
  readonly engineId: RequestId
  readonly method: string
}

const RESOLVED_MEMORY = 256

export class ServerRequestMap {
  /** Client id → the engine request it stands for, until the client replies. */
  private readonly pending = new Map<number, EngineRequest>()
  /** Engine id → client id, for every request the client has seen (bounded, oldest first). */
  private readonly seen = new Map<RequestId, number>()

  constructor(private readonly ids: RequestIdAllocator) {}

  get size(): number {
    return this.pending.size
  }

  /** Registers an engine request; returns the id to send it to the client with. */
  add(engineId: RequestId, method: string): number {
    const clientId = this.ids.allocate()
    this.pending.set(clientId, { engineId, method })
    this.seen.delete(engineId)
    this.seen.set(engineId, clientId)
    if (this.seen.size > RESOLVED_MEMORY) {
      const oldest = this.seen.keys().next()
      if (!oldest.done) this.seen.delete(oldest.value)
    }
    return clientId
  }

  /** Whether a client reply with this id would answer an engine request. */
  awaits(clientId: unknown): boolean {
    return typeof clientId === 'number' && this.pending.has(clientId)
  }

  /** The engine request a client reply answers (and forgets it), or undefined for an unknown id. */
  take(clientId: unknown): EngineRequest | undefined {
    if (typeof clientId !== 'number') return undefined
    const request = this.pending.get(clientId)
    if (request !== undefined) this.pending.delete(clientId)
    return request
  }

  /** For `serverRequest/resolved`: the id the client saw for an engine id (and forgets it). */
  resolve(engineId: unknown): number | undefined {
    if (typeof engineId !== 'number' && typeof engineId !== 'string') return undefined
    const clientId = this.seen.get(engineId)
    if (clientId === undefined) return undefined
    this.seen.delete(engineId)
    // A resolution the client did not answer (the turn ended, another client answered): the
    // reply it may still send has nothing to answer.
    this.pending.delete(clientId)
    return clientId
  }

  /** Every request still unanswered (and forgets them all). */
  drain(): EngineRequest[] {
    const all = [...this.pending.values()]
    this.pending.clear()
    this.seen.clear()
    return all
  }
}
