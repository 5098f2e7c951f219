/**
 * Last-line scrubbing for text that may quote a request: query strings, fragments and bearer
 * credentials. The structured serializers already avoid secrets; this catches framework
 * messages that embed a raw URL (e.g. "Reply was already sent ... /?token=...").
 *
 * Redaction never depends on a query parsing the way a well-behaved client writes it:
 * 1. a query or fragment starts at `?`, at a `#` that follows a non-space, or at their
 *    percent-encoded forms (`%3F`, `%23`: a client that encoded its separator still sent one);
 *    in free text it runs to the next whitespace, in a URL to the end;
 * 2. a plain query (`key=value` or bare `key` parts joined by `&`, short keys of unreserved
 *    characters, no fragment) keeps its keys and loses every value;
 * 3. anything else — a fragment, an encoded separator, an odd character in a key, an empty
 *    part, a long key (it may be the secret itself) — is written as one `[redacted]`.
 */
import { REDACTED } from '../util/redaction-markers.js'

/** Where a query or fragment begins; `#` only after a non-space, so "issue #3" stays. */
const QUERY_START = /\?|%3f|(?<=\S)(?:#|%23)/i
const QUERY_IN_TEXT = new RegExp(`(?:${QUERY_START.source})\\S*`, 'gi')
/** One part of a plain query: a short key of unreserved characters, maybe `=` and a value. */
const PLAIN_PART = /^([A-Za-z0-9_.~-]{1,24})(=[^&#]*)?$/
/** A `key=value` pair after `&` or `;` outside any query (a form body quoted in an error). */
const PAIR_VALUE = /([&;][^=&#\s]*=)[^&#\s]*/g
const BEARER = /(\bbearer\s+)[^\s"',;]+/gi

/** Nothing a rule above could match: most log text, left alone without running them. */
const NOTHING_TO_SCRUB = /^[^?#%&;]*$/

export function scrubText(text: string): string {
  if (NOTHING_TO_SCRUB.test(text) && !/bearer/i.test(text)) return text
  return text.replace(QUERY_IN_TEXT, redactQuery).replace(PAIR_VALUE, `$1${REDACTED}`).replace(BEARER, `$1${REDACTED}`)
}

/**
 * A request target with its query values removed, keys kept when plain: `/x?token=[redacted]`.
 * A path segment longer than a word is removed too: the WebSocket route ignores the path, and
 * a client that dropped the `?` (`/token=T`, `/T`) sent its token there.
 */
export function redactUrl(url: string | undefined): string | undefined {
  if (url === undefined) return undefined
  const start = QUERY_START.exec(url)
  const path = start === null ? url : url.slice(0, start.index)
  return redactLongSegments(path) + (start === null ? '' : redactQuery(url.slice(start.index)))
}

/** Longest path segment written as is; longer ones (a 43-character token, a JWT) are `[redacted]`. */
const MAX_PATH_SEGMENT = 24

function redactLongSegments(path: string): string {
  if (path.length <= MAX_PATH_SEGMENT) return path
  return path
    .split('/')
    .map((segment) => (segment.length > MAX_PATH_SEGMENT ? REDACTED : segment))
    .join('/')
}

/** `query` starts with its separator; see rules 2 and 3 of the header. */
function redactQuery(query: string): string {
  if (query === '?') return query
  if (query[0] !== '?') return REDACTED
  const parts = query.slice(1).split('&')
  const kept: string[] = []
  for (const part of parts) {
    const plain = PLAIN_PART.exec(part)
    if (plain === null) return `?${REDACTED}`
    kept.push(plain[2] === undefined ? plain[1]! : `${plain[1]}=${REDACTED}`)
  }
  return `?${kept.join('&')}`
}

/** An error's message short enough for a client or a log line, without anything that looks like a credential. */
export function shortReason(err: unknown): string {
  const message = err instanceof Error ? err.message : typeof err === 'string' ? err : 'unknown error'
  return scrubText(message).slice(0, 300)
}
