/** Reading an HTTP response body without letting a server make us buffer without limit. */

export interface BoundedBody {
  /** At most `maxBytes` of the body. */
  readonly bytes: Buffer
  /** The body was longer: the rest was dropped unread. */
  readonly truncated: boolean
  /** Why reading stopped early (abort, reset), with what was read so far in `bytes`; null when it did not. */
  readonly error: unknown
}

/** Reads at most `maxBytes`, then cancels the stream; never throws (a failure is in `error`). */
export async function readBounded(response: Response, maxBytes: number, signal: AbortSignal): Promise<BoundedBody> {
  if (response.body === null) return { bytes: Buffer.alloc(0), truncated: false, error: null }
  // A fetch body streams bytes; undici's type leaves the chunk type open.
  const reader = (response.body as ReadableStream<Uint8Array>).getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  let truncated = false
  let error: unknown = null
  try {
    for (;;) {
      signal.throwIfAborted()
      const { done, value } = await reader.read()
      if (done) break
      chunks.push(value)
      size += value.byteLength
      if (size > maxBytes) {
        truncated = true
        break
      }
    }
  } catch (err) {
    error = err
  } finally {
    await reader.cancel().catch(() => {})
  }
  const bytes = Buffer.concat(chunks)
  return { bytes: bytes.subarray(0, Math.min(bytes.byteLength, maxBytes)), truncated, error }
}
