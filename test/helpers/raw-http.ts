/**
 * One hand-written HTTP exchange over a plain TCP socket, for requests no client library will
 * send (HTTP/1.0 upgrades, bodies on upgrades, odd `Upgrade` values, bad keys). The response
 * head and body are recorded for the canary check.
 */
import net from 'node:net'
import { record } from './canary.js'

export interface RawExchange {
  readonly status: number
  /** Header names lower-cased; a repeated header keeps its last value. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** The WebSocket opening-handshake headers a well-behaved client sends (no Host). */
export const HANDSHAKE_HEADERS: readonly string[] = ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']

/** `lines` (request line first) and `body` sent as one write; resolves once the response is complete. */
export function rawExchange(port: number, lines: readonly string[], body = ''): Promise<RawExchange> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`))
    let buf = Buffer.alloc(0)
    let done = false
    const settle = (result: RawExchange | Error): void => {
      if (done) return
      done = true
      socket.destroy()
      if (result instanceof Error) reject(result)
      else resolve(result)
    }
    const parse = (ended: boolean): void => {
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) {
        if (ended) settle(new Error('the server closed without a response'))
        return
      }
      const head = buf.subarray(0, end).toString('latin1')
      const [statusLine = '', ...fields] = head.split('\r\n')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0)
      const headers: Record<string, string> = {}
      for (const field of fields) {
        const colon = field.indexOf(':')
        headers[field.slice(0, colon).toLowerCase()] = field.slice(colon + 1).trim()
      }
      const length = status === 101 || lines[0]?.startsWith('HEAD ') ? 0 : Number(headers['content-length'] ?? 0)
      if (buf.length < end + 4 + length) {
        if (ended) settle(new Error('the server closed in the middle of a response'))
        return
      }
      const text = buf.subarray(end + 4, end + 4 + length).toString('utf8')
      record(head)
      record(text)
      settle({ status, headers, body: text })
    }
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      parse(false)
    })
    socket.on('close', () => parse(true))
    socket.on('error', () => {
      /* a reset is followed by 'close' */
    })
  })
}
