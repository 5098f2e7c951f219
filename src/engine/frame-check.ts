/**
 * Whether the engine will read a client's frame as the gateway read it.
 *
 * The gateway parses with `JSON.parse`; codex parses with serde_json, which reads a few inputs
 * differently. A frame codex cannot read is dropped without an answer (a forwarded request
 * would hang, its in-flight slots held until the client goes); a frame it reads differently
 * would run something other than what the gateway checked. So a frame goes to the engine as
 * written only when, in this order:
 * 1. no top-level member is named twice, escapes undone (`JSON.parse` keeps the last; serde
 *    refuses the frame — and the gateway must never check one `method` and forward another);
 * 2. a numeric `id` is written as an integer: serde reads `1.0` or `1e0` as a float, no id;
 * 3. `trace`, when present, is null or an object whose `traceparent` and `tracestate` are
 *    strings or null (serde types the member and refuses the whole frame otherwise);
 * 4. no array or object nests deeper than `ENGINE_MAX_DEPTH`, the frame's own object counted
 *    (serde_json's recursion limit);
 * 5. no string or key holds a lone surrogate (`"\ud800"`: serde refuses it).
 * Each rule was checked against codex 0.169.0 (test/attack-engine-e2e.test.ts). The first
 * rule that fails is the answer: a short fixed phrase, never the frame's own text.
 */
import { isJsonObject, type JsonObject } from '../util/json.js'
import { distinctTopLevelMembers } from '../util/json-scan.js'

/** The deepest nesting codex reads: 127 arrays and objects, the frame's own included. */
export const ENGINE_MAX_DEPTH = 127

export const DUPLICATE_MEMBER = 'a member is named twice'
const FLOAT_ID = 'a numeric id must be written as an integer'
const BAD_TRACE = 'trace must be null or an object of string traceparent and tracestate'
const TOO_DEEP = `nesting deeper than ${ENGINE_MAX_DEPTH} levels`
const LONE_SURROGATE = 'a string holds a lone surrogate'

const INTEGER_TEXT = /^-?(?:0|[1-9][0-9]*)$/
const LONE_SURROGATE_AT = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** Why codex would not read the frame `text` (parsed as `frame`) as the gateway did; null when it would. */
export function engineFrameProblem(text: string, frame: JsonObject): string | null {
  const members = distinctTopLevelMembers(text)
  if (members === null) return DUPLICATE_MEMBER
  const id = members.get('id')
  if (id !== undefined && typeof frame.id === 'number' && !INTEGER_TEXT.test(text.slice(id.start, id.end))) return FLOAT_ID
  if ('trace' in frame && !isTraceContext(frame.trace)) return BAD_TRACE
  return engineValueProblem(frame, 1)
}

/**
 * Rules 4 and 5 for a value the gateway itself writes into a frame at nesting level `depth`
 * (1: the frame's own object), e.g. the client's `initialize` params at level 2.
 */
export function engineValueProblem(value: unknown, depth: number): string | null {
  if (typeof value === 'string') return LONE_SURROGATE_AT.test(value) ? LONE_SURROGATE : null
  if (value === null || typeof value !== 'object') return null
  if (depth > ENGINE_MAX_DEPTH) return TOO_DEEP
  // Recursion stops at the depth limit, so a 100k-deep value cannot exhaust the stack here.
  if (Array.isArray(value)) {
    for (const item of value) {
      const problem = engineValueProblem(item, depth + 1)
      if (problem !== null) return problem
    }
    return null
  }
  for (const [key, item] of Object.entries(value)) {
    if (LONE_SURROGATE_AT.test(key)) return LONE_SURROGATE
    const problem = engineValueProblem(item, depth + 1)
    if (problem !== null) return problem
  }
  return null
}

function isTraceContext(trace: unknown): boolean {
  if (trace === null) return true
  if (!isJsonObject(trace)) return false
  return isOptionalString(trace.traceparent) && isOptionalString(trace.tracestate)
}

function isOptionalString(v: unknown): boolean {
  return v === undefined || v === null || typeof v === 'string'
}
