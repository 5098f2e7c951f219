import type { RpcErrorBody } from './wire.js'

export const INVALID_REQUEST = -32600
export const INTERNAL_ERROR = -32603
export const OVERLOADED = -32001

export const OVERLOADED_MESSAGE = 'Server overloaded; retry later.'

/** Refusals and last answers of a drain, and the close reason its sockets get. */
export const SHUTTING_DOWN_MESSAGE = 'server shutting down'
/** A request that arrives while the process drains: refused at once, like load it cannot take. */
export const SHUTTING_DOWN_REFUSAL = { code: OVERLOADED, message: SHUTTING_DOWN_MESSAGE } as const
/** A request still unanswered when the drain's deadline comes. */
export const SHUTTING_DOWN_UNANSWERED = { code: INTERNAL_ERROR, message: SHUTTING_DOWN_MESSAGE } as const

/**
 * An error a handler means to show the client. Its message must be safe to show: fixed
 * wording plus values the client itself sent, never a secret. Any other thrown value
 * becomes a generic -32603.
 */
export class RpcError extends Error {
  readonly code: number
  readonly data: unknown

  constructor(code: number, message: string, data?: unknown) {
    // An RpcError is an answer, not a bug: no stack is captured (capturing one cost more than
    // the rest of a request on the hot path).
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(message)
    Error.stackTraceLimit = limit
    this.name = 'RpcError'
    this.code = code
    this.data = data
  }

  toBody(): RpcErrorBody {
    return this.data === undefined ? { code: this.code, message: this.message } : { code: this.code, message: this.message, data: this.data }
  }

  static invalidRequest(message: string): RpcError {
    return new RpcError(INVALID_REQUEST, message)
  }
}
