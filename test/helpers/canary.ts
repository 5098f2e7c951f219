/**
 * Canaries: every secret a test creates is made here and remembered. Everything the suite
 * captures (server logs at debug level, health bodies, 401 bodies, error text) is recorded
 * with `record`. When the test process exits, any canary found in what was recorded fails
 * the file (non-zero exit), whatever the test itself asserted.
 */
import { randomBytes } from 'node:crypto'

/** Each canary with the forms it is looked for in: itself, URL-encoded, base64 (made once, not at every look). */
const canaries = new Map<string, readonly string[]>()
const recorded: string[] = []

function remember(value: string): void {
  if (!canaries.has(value)) canaries.set(value, formsOf(value))
}

function formsOf(value: string): readonly string[] {
  return [value, encodeURIComponent(value), Buffer.from(value).toString('base64')]
}

/** A fresh secret-looking string, remembered for the leak check. */
export function canary(label = 'canary'): string {
  const value = `${label}-${randomBytes(18).toString('base64url')}`
  remember(value)
  return value
}

/** Registers a secret made elsewhere (a generated token, a signed JWT). */
export function registerCanary(value: string): string {
  if (value.length >= 8) remember(value)
  return value
}

export function record(text: string): void {
  recorded.push(text)
}

/** The canaries that appear in `text` (or in everything recorded, by default). */
export function leakedCanaries(text: string = recorded.join('\n')): string[] {
  const found: string[] = []
  for (const [c, forms] of canaries) if (forms.some((f) => text.includes(f))) found.push(c)
  return found
}

/** Whether `text` holds `value` in any of the forms `leakedCanaries` looks for (one canary, for checks run thousands of times). */
export function holdsCanary(text: string, value: string): boolean {
  return (canaries.get(value) ?? formsOf(value)).some((f) => text.includes(f))
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
