/**
 * Waiting on things that happen over real sockets and processes, never on the passing of time:
 * a promise with a deadline (so a hang fails with a name instead of tap's timeout), a condition
 * polled until it holds, and a gate a test opens by hand to order two parties.
 */

/** `p`, or a rejection naming `what` once `ms` have passed. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
    }),
  ])
}

/** Resolves once `pred()` holds (checked every few ms); rejects naming `what` after `ms`. */
export async function until(pred: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** A promise the test settles by hand: one party opens it, the other waits on it. */
export interface Gate {
  readonly opened: Promise<void>
  open(): void
}

export function gate(): Gate {
  let open!: () => void
  const opened = new Promise<void>((resolve) => (open = resolve))
  return { opened, open }
}
