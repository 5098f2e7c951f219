/**
 * Remote control that could not be set up (a base URL off the allow-list, an unreadable
 * database, better-sqlite3's native module missing). The server still starts without it:
 * `remoteControl/enable` fails with the reason set-up failed, `disable` and `status/read`
 * answer `disabled`. The reason clients see names no path (the log keeps the detail): a
 * store or installation-id failure is told by its code, anything unforeseen by a fixed text.
 */
import { withheldError } from '../log/logger.js'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import { createRemoteControl, type RemoteControlWiring } from './create.js'
import type { RemoteControlApi } from './methods.js'
import { isNativeModuleFailure, NATIVE_MODULE_MISSING } from './native-module.js'
import type { RemoteControlStatusView } from './types.js'
import { EnrollmentStoreError, enrollmentStoreReason } from './enrollment-store.js'
import { InstallationIdError } from './installation-id.js'
import { fsReason } from '../util/fs-reason.js'
import { InvalidRemoteControlUrl } from './base-url.js'

/** Why set-up failed, for clients: no path, whatever the failure. */
function clientReason(err: unknown): string {
  if (err instanceof EnrollmentStoreError) return `remote control unavailable: its enrollment store cannot be used: ${enrollmentStoreReason(err.code)}`
  if (err instanceof InstallationIdError) return `remote control unavailable: its installation id cannot be read or created: ${fsReason(err)}`
  // The base URL comes from the server's own configuration; the message says what is allowed.
  if (err instanceof InvalidRemoteControlUrl) return err.message
  return 'remote control unavailable: set-up failed (see the server log)'
}

function unavailableRemoteControl(reason: string): RemoteControlApi {
  const status: RemoteControlStatusView = { status: 'disabled', serverName: '', installationId: '', environmentId: null }
  return {
    enable: () => Promise.reject(new RpcError(INTERNAL_ERROR, reason)),
    disable: async () => status,
    status: () => status,
  }
}

/** Builds remote control, or, when that fails, logs why (the error's text withheld) and stands in. */
export async function createRemoteControlOrStandIn(w: RemoteControlWiring): Promise<{ api: RemoteControlApi; close(): Promise<void> }> {
  try {
    const rc = await createRemoteControl(w)
    return { api: rc.controller, close: () => rc.close() }
  } catch (err) {
    if (isNativeModuleFailure(err)) {
      w.log.warn(NATIVE_MODULE_MISSING)
      return { api: unavailableRemoteControl(NATIVE_MODULE_MISSING), close: async () => {} }
    }
    // Our own store errors are written secret-free, with the path the client's reason leaves out.
    const detail = err instanceof EnrollmentStoreError || err instanceof InstallationIdError ? err.message : undefined
    w.log.warn({ error: withheldError(err), detail }, 'remote control unavailable')
    return { api: unavailableRemoteControl(clientReason(err)), close: async () => {} }
  }
}
