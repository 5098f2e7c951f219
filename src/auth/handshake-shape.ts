/**
 * Whether an upgrade request is a WebSocket opening handshake this server completes. `ws`
 * checks most of this itself, but only once the route hands it the socket — after the
 * credential was decided and the connection logged as accepted — and it is more lenient than
 * the protocol this server speaks. Checked here instead, before a connection is admitted, so
 * no `accepted` line is ever written for a request that could not become a socket. The route
 * checks it after the credential: a refused credential keeps its 401 whatever else is wrong.
 *
 * In this order, each a 400 with a fixed reason that never quotes the request:
 * 1. HTTP/1.1: an HTTP/1.0 request cannot carry an upgrade (RFC 6455 §4.1);
 * 2. `GET` (a `HEAD` reaches the WebSocket route too, and never gets a body, let alone a socket);
 * 3. `Upgrade` is exactly the one token `websocket` — `websocket, h2c` asks for two protocols
 *    at once, and the server would be choosing for the client;
 * 4. `Sec-WebSocket-Version` is exactly `13`: `ws` also takes draft version 8, whose browsers
 *    sent `Sec-WebSocket-Origin` instead of `Origin`, past the browser guard;
 * 5. `Sec-WebSocket-Key` is the base64 of 16 bytes;
 * 6. no body (`Content-Length` other than 0, or any `Transfer-Encoding`): once the socket is
 *    switched, the bytes of a body would be read as WebSocket frames.
 */
import type { IncomingHttpHeaders } from 'node:http'

export interface HandshakeRequest {
  readonly method?: string | undefined
  readonly httpVersion: string
  readonly headers: IncomingHttpHeaders
}

/** A refusal's `headers` go into the 400 (a version refusal names the version spoken, as RFC 6455 §4.4 asks). */
export type HandshakeVerdict = { ok: true } | { ok: false; reason: string; headers: Record<string, string> }

const refuse = (reason: string, headers: Record<string, string> = {}): HandshakeVerdict => ({ ok: false, reason, headers })

/** 16 bytes in base64, as `ws` checks it. */
const KEY = /^[+/0-9A-Za-z]{22}==$/

export function checkHandshake(request: HandshakeRequest): HandshakeVerdict {
  const { headers } = request
  if (request.httpVersion !== '1.1') return refuse('websocket upgrade needs HTTP/1.1')
  if (request.method !== 'GET') return refuse('websocket upgrade must be a GET')
  if (headers.upgrade?.trim().toLowerCase() !== 'websocket') return refuse('upgrade header is not websocket')
  if (headers['sec-websocket-version']?.trim() !== '13') return refuse('unsupported websocket version', { 'sec-websocket-version': '13' })
  if (!KEY.test(headers['sec-websocket-key']?.trim() ?? '')) return refuse('invalid websocket key')
  const length = headers['content-length']
  if ((length !== undefined && Number(length) !== 0) || headers['transfer-encoding'] !== undefined) return refuse('websocket upgrade with a body')
  return { ok: true }
}
