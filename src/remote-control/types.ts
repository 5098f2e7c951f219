/**
 * Remote control: the server dials out to the backend and relays remote clients into the
 * same dispatcher local clients use. Shared types of its parts.
 */

export type RemoteControlStatus = 'disabled' | 'connecting' | 'connected' | 'errored'

/** `remoteControl/status/read` result and `remoteControl/status/changed` params. */
export interface RemoteControlStatusView {
  readonly status: RemoteControlStatus
  readonly serverName: string
  readonly installationId: string
  readonly environmentId: string | null
}

/** What enroll and refresh return (all fields required on the wire). */
export interface ServerTokenGrant {
  readonly serverId: string
  readonly environmentId: string
  /** Memory only: never persisted, never logged. */
  readonly remoteControlToken: string
  readonly expiresAt: Date
}

/** The ChatGPT credential enrollment and refresh are made with. */
export interface ChatgptAuth {
  readonly accessToken: string
  readonly accountId: string
}

/** The durable identity of this server at the backend: no token, no expiry, no cursor. */
export interface Enrollment {
  readonly websocketUrl: string
  readonly accountId: string
  readonly appServerClientName: string
  readonly serverId: string
  readonly environmentId: string
  readonly serverName: string
  readonly updatedAt: Date
}

/** An HTTP failure talking to the backend, with what the controller's status handling needs. */
export class RemoteControlHttpError extends Error {
  override name = 'RemoteControlHttpError'
  constructor(
    readonly status: number,
    message: string,
    /** Seconds or an HTTP date, as the backend sent it. */
    readonly retryAfter: string | null,
    /** The parsed JSON body, when it was JSON (for `{"detail": ...}` checks). */
    readonly body: unknown,
  ) {
    super(message)
  }
}
