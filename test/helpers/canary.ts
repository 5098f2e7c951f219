/**
 * Canaries: every secret a test creates is made here and remembered. Everything the suite
 * captures (server logs at debug level, health bodies, 401 bodies, error text) is recorded
 * with `record`. When the test process exits, any canary found in what was recorded fails
 * the file (non-zero exit), whatever the test itself asserted.
 */
import { randomBytes } from 'node:crypto'

const canaries = new Set<string>()
const recorded: string[] = []

/** A fresh secret-looking string, remembered for the leak check. */
export function canary(label = 'canary'): string {
  const value = `${label}-${randomBytes(18).toString('base64url')}`
  canaries.add(value)
  return value
}

/** Registers a secret made elsewhere (a generated token, a signed JWT). */
export function registerCanary(value: string): string {
  if (value.length >= 8) canaries.add(value)
  return value
}

export function record(text: string): void {
  recorded.push(text)
}

/** The canaries that appear in `text` (or in everything recorded, by default). */
export function leakedCanaries(text: string = recorded.join('\n')): string[] {
  const found: string[] = []
  for (const c of canaries) {
    // Also catch the URL-encoded and the base64 forms of a canary.
    if (text.includes(c) || text.includes(encodeURIComponent(c)) || text.includes(Buffer.from(c).toString('base64'))) found.push(c)
  }
  return found
}

export function recordedText(): string {
  return recorded.join('\n')
}

process.on('exit', () => {
  const leaks = leakedCanaries()
  if (leaks.length > 0) {
    process.stderr.write(`CANARY LEAK: ${leaks.length} secret(s) appeared in captured logs or responses\n`)
    process.exitCode = 1
  }
})
