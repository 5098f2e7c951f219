/**
 * What a failed fetch says about itself, from codes only: an unknown error's message may quote
 * the request, headers included, so it never reaches the text.
 */
import { printableErrorCode } from './error-code.js'

/** undici puts the socket's code on `cause`; a few errors carry it themselves. */
export function fetchErrorCode(err: unknown): string | undefined {
  const cause = typeof err === 'object' && err !== null ? (err as { cause?: unknown }).cause : undefined
  return printableErrorCode(cause) ?? printableErrorCode(err)
}

/** `network error`, or `network error (ECONNREFUSED)` when the code is known. */
export function networkErrorText(code: string | undefined): string {
  return code === undefined ? 'network error' : `network error (${code})`
}
