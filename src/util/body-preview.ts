/**
 * Short previews of an HTTP error body for an error message. Two layouts, because two
 * audiences read them: the account backend's one-line preview (this project's wording) and
 * the remote control preview, which keeps codex's layout so its messages read like codex's.
 * Callers redact first (or pass `redact`): a body may echo a secret.
 */

/**
 * Whitespace collapsed to single spaces, trimmed, `(empty)` when nothing is left; at most
 * `maxChars` characters, ending in `…` when cut or when the body was `truncated` while read.
 */
export function oneLinePreview(text: string, truncated: boolean, maxChars: number): string {
  const flat = text.replace(/\s+/g, ' ').trim()
  if (flat === '') return '(empty)'
  if (flat.length <= maxChars && !truncated) return flat
  let end = Math.min(flat.length, maxChars - 1)
  // Never cut a surrogate pair in half.
  const code = flat.charCodeAt(end - 1)
  if (code >= 0xd800 && code <= 0xdbff) end -= 1
  return `${flat.slice(0, end)}…`
}

/**
 * Trimmed, `<empty>` when nothing is left; otherwise `redact`ed and then cut at `maxBytes`
 * UTF-8 bytes on a character boundary, with `...` appended when cut (codex's layout).
 */
export function byteCappedPreview(text: string, maxBytes: number, redact: (text: string) => string): string {
  const trimmed = text.trim()
  if (trimmed === '') return '<empty>'
  const redacted = redact(trimmed)
  const bytes = Buffer.from(redacted, 'utf8')
  if (bytes.byteLength <= maxBytes) return redacted
  let cut = maxBytes
  // A byte 10xxxxxx continues a character: back up to the byte that starts it.
  while (cut > 0 && ((bytes[cut] ?? 0) & 0xc0) === 0x80) cut -= 1
  return `${bytes.subarray(0, cut).toString('utf8')}...`
}
