/**
 * One streamed turn, as a codex client sees it: `initialize`, `thread/start`, `turn/start`,
 * then `item/agentMessage/delta` notifications until `turn/completed`.
 *
 * The rate is deltas per second from the first delta to `turn/completed`, so the fixed cost
 * of starting the turn (the engine calling the model) is left out and the figure is the
 * streaming itself. A delta frame is recognised by its method text without parsing it: the
 * client must not be what limits the rate on a shared machine. A turn that ends any other
 * way, or with a delta count other than the model's, rejects: a fast wrong answer is no figure.
 */
import type WebSocket from 'ws'
import { closed, initialized, open } from './measure.js'

export interface StreamResult {
  readonly deltas: number
  readonly perSecond: number
}

const DELTA_MARK = '"method":"item/agentMessage/delta"'
const COMPLETED_MARK = '"method":"turn/completed"'
const THREAD_START_ID = 1
const TURN_START_ID = 2

export async function streamedTurn(url: string, cwd: string, expectedDeltas: number, timeoutMs: number): Promise<StreamResult> {
  const ws = await open(url)
  try {
    await initialized(ws)
    return await runTurn(ws, cwd, expectedDeltas, timeoutMs)
  } finally {
    await closed(ws)
  }
}

function runTurn(ws: WebSocket, cwd: string, expectedDeltas: number, timeoutMs: number): Promise<StreamResult> {
  return new Promise((resolve, reject) => {
    let deltas = 0
    let firstDeltaAt = 0
    const timer = setTimeout(() => finish(new Error(`turn not completed in ${timeoutMs / 1000} s (${deltas} deltas seen)`)), timeoutMs)
    const finish = (outcome: Error | StreamResult) => {
      clearTimeout(timer)
      ws.off('message', onMessage)
      if (outcome instanceof Error) reject(outcome)
      else resolve(outcome)
    }
    const onMessage = (data: WebSocket.RawData) => {
      try {
        onFrame(data.toString())
      } catch (err) {
        finish(err instanceof Error ? err : new Error(String(err)))
      }
    }
    const onFrame = (text: string): void => {
      if (text.includes(DELTA_MARK)) {
        if (deltas++ === 0) firstDeltaAt = performance.now()
        return
      }
      if (text.includes(COMPLETED_MARK)) {
        const seconds = (performance.now() - firstDeltaAt) / 1000
        const status = (JSON.parse(text) as { params?: { turn?: { status?: unknown } } }).params?.turn?.status
        if (status !== 'completed') return finish(new Error(`turn ended ${String(status)}`))
        if (deltas !== expectedDeltas) return finish(new Error(`${deltas} deltas streamed, the model sent ${expectedDeltas}`))
        return finish({ deltas, perSecond: deltas / seconds })
      }
      const msg = JSON.parse(text) as { id?: unknown; method?: unknown; result?: { thread?: { id?: unknown } }; error?: { message?: unknown } }
      if (msg.method !== undefined) return // other notifications; no server request comes for a plain answer
      if (msg.error !== undefined) return finish(new Error(`request ${String(msg.id)} failed: ${String(msg.error.message)}`))
      if (msg.id === THREAD_START_ID) {
        const threadId = msg.result?.thread?.id
        if (typeof threadId !== 'string') return finish(new Error('thread/start gave no thread id'))
        const input = [{ type: 'text', text: 'stream your answer', text_elements: [] }]
        ws.send(JSON.stringify({ id: TURN_START_ID, method: 'turn/start', params: { threadId, input } }))
      }
    }
    ws.on('message', onMessage)
    ws.send(JSON.stringify({ id: THREAD_START_ID, method: 'thread/start', params: { cwd } }))
  })
}
