import type { Session } from './session.js'

/**
 * Every live session of the process, local or remote. Broadcasts go only to initialized
 * sessions that did not opt out of the method; shutdown waits for in-flight requests.
 */
export class SessionRegistry {
  private readonly sessions = new Set<Session>()

  get size(): number {
    return this.sessions.size
  }

  add(session: Session): void {
    this.sessions.add(session)
  }

  remove(session: Session): void {
    this.sessions.delete(session)
  }

  broadcast(method: string, params: unknown): void {
    for (const s of this.sessions) {
      if (s.wantsNotification(method)) s.sendNotification(method, params)
    }
  }

  /**
   * Broadcasts once the result of the request being handled has gone out: as codex, a client
   * gets its result before the notifications its request caused. The result is sent in the
   * microtasks that follow the handler; `setImmediate` runs after them, first in first out,
   * so deferred notifications keep their order.
   */
  broadcastAfterResults(method: string, params: unknown): void {
    setImmediate(() => this.broadcast(method, params))
  }

  /** Lets every session answer what it has in flight, then closes it with `code`. */
  async closeAll(code: number, reason: string): Promise<void> {
    await Promise.all(
      [...this.sessions].map(async (s) => {
        await s.whenIdle()
        s.close(code, reason)
      }),
    )
  }
}
