/**
 * JSON-RPC "lite", as codex speaks it: no `jsonrpc` member is sent (one that arrives is
 * ignored), ids are strings or integers, one message per WebSocket text frame.
 */
import { isJsonObject, tryParseJson } from '../util/json.js'

export type RequestId = string | number

export interface RpcErrorBody {
  readonly code: number
  readonly message: string
  readonly data?: unknown
}

export type Incoming =
  | { readonly kind: 'request'; readonly id: RequestId; readonly method: string; readonly params: unknown }
  | { readonly kind: 'notification'; readonly method: string; readonly params: unknown }
  | { readonly kind: 'response'; readonly id: RequestId; readonly result: unknown }
  | { readonly kind: 'error'; readonly id: RequestId; readonly error: RpcErrorBody }

export type ParseFailure = 'not json' | 'not a message'

function isRequestId(v: unknown): v is RequestId {
  return typeof v === 'string' || (typeof v === 'number' && Number.isSafeInteger(v))
}

/** One frame's text → a classified message, or why it is none. Parses once. */
export function parseIncoming(text: string): Incoming | ParseFailure {
  return classifyMessage(tryParseJson(text))
}

/** A parsed frame (`undefined`: the text was not JSON) → a classified message, or why it is none. */
export function classifyMessage(m: unknown): Incoming | ParseFailure {
  if (m === undefined) return 'not json'
  if (!isJsonObject(m)) return 'not a message'
  const method = m.method
  const hasId = 'id' in m
  if (typeof method === 'string') {
    if (!hasId) return { kind: 'notification', method, params: m.params }
    if (!isRequestId(m.id)) return 'not a message'
    return { kind: 'request', id: m.id, method, params: m.params }
  }
  if (method !== undefined || !isRequestId(m.id)) return 'not a message'
  if ('result' in m && !('error' in m)) return { kind: 'response', id: m.id, result: m.result }
  const error = m.error
  if (!('result' in m) && error !== null && typeof error === 'object') {
    const e = error as Record<string, unknown>
    if (typeof e.code === 'number' && Number.isSafeInteger(e.code) && typeof e.message === 'string') {
      return { kind: 'error', id: m.id, error: 'data' in e ? { code: e.code, message: e.message, data: e.data } : { code: e.code, message: e.message } }
    }
  }
  return 'not a message'
}

export function encodeResult(id: RequestId, result: unknown): string {
  return JSON.stringify({ id, result })
}

/** Key order as codex writes it: `error` first. `data` is omitted when absent, never null. */
export function encodeError(id: RequestId, error: RpcErrorBody): string {
  return JSON.stringify({ error, id })
}

export function encodeNotification(method: string, params: unknown): string {
  return params === undefined ? JSON.stringify({ method }) : JSON.stringify({ method, params })
}

export function encodeRequest(id: RequestId, method: string, params: unknown): string {
  return params === undefined ? JSON.stringify({ id, method }) : JSON.stringify({ id, method, params })
}
