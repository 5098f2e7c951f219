/** Reconnect delay: 200 ms × 2^(n−1), ±10 % jitter, capped at 30 s (n = failed attempts so far, from 1). */
export function reconnectDelayMs(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(30_000, 200 * 2 ** Math.max(0, attempt - 1))
  const jitter = 1 + (random() * 2 - 1) * 0.1
  return Math.min(30_000, Math.round(base * jitter))
}
