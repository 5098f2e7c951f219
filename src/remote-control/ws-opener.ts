import WebSocket from 'ws'
import type { BackendSocket, SocketOpener } from './controller.js'
import { errorCode } from '../util/error-code.js'
import { tryParseJson } from '../util/json.js'

/** A backend handshake answered with something other than 101. */
export class HandshakeError extends Error {
  override name = 'HandshakeError'
  constructor(
    readonly status: number,
    readonly body: unknown,
    message: string,
  ) {
    super(message)
  }
}

const MAX_ERROR_BODY = 16 * 1024

/** Opens the backend socket with `ws`; a refusal becomes a `HandshakeError` with the status and JSON body. */
export function wsOpener(describe: (status: number, headers: Record<string, string | string[] | undefined>, body: Buffer) => string): SocketOpener {
  return {
    open(url, headers) {
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(url, { headers, perMessageDeflate: false, handshakeTimeout: 30_000 })
        ws.once('unexpected-response', (_req, res) => {
          const chunks: Buffer[] = []
          let size = 0
          res.on('data', (c: Buffer) => {
            if (size < MAX_ERROR_BODY) chunks.push(c)
            size += c.length
          })
          res.on('end', () => {
            const body = Buffer.concat(chunks)
            const json = tryParseJson(body.toString('utf8')) ?? null
            const status = res.statusCode ?? 0
            reject(new HandshakeError(status, json, `remote control websocket handshake failed: ${describe(status, res.headers, body)}`))
            ws.terminate()
          })
        })
        ws.once('error', (err) => reject(new Error(`remote control websocket failed: ${errorCode(err) ?? 'network error'}`)))
        ws.once('open', () => resolve(wrap(ws)))
      })
    },
  }
}

function wrap(ws: WebSocket): BackendSocket {
  return {
    send: (text) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(text)
    },
    ping: () => {
      if (ws.readyState === WebSocket.OPEN) ws.ping()
    },
    close: () => ws.close(),
    onMessage: (fn) => ws.on('message', (data, isBinary) => (isBinary ? undefined : fn(data.toString()))),
    onPong: (fn) => ws.on('pong', fn),
    onClose: (fn) => ws.once('close', () => fn()),
  }
}
