/**
 * Remote control that could not be set up (a base URL off the allow-list, an unreadable
 * database, better-sqlite3's native module missing). The server still starts without it: `remoteControl/enable` fails with the reason
 * set-up failed, `disable` and `status/read` answer `disabled`.
 */
import { withheldError } from '../log/logger.js'
import { INTERNAL_ERROR, RpcError } from '../rpc/errors.js'
import { createRemoteControl, type RemoteControlWiring } from './create.js'
import type { RemoteControlApi } from './methods.js'
import { isNativeModuleFailure, NATIVE_MODULE_MISSING } from './native-module.js'
import type { RemoteControlStatusView } from './types.js'

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
    w.log.warn({ error: withheldError(err) }, 'remote control unavailable')
    return { api: unavailableRemoteControl(err instanceof Error ? err.message : 'remote control is unavailable'), close: async () => {} }
  }
}
