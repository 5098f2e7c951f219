import type { AccountServices } from './account/methods.js'
import type { SessionEngine } from './engine/forward.js'
import type { RemoteControlServices } from './remote-control/methods.js'
import type { ServerInfo } from './rpc/methods/initialize.js'

/** What JSON-RPC handlers may use. Plugins build these; handlers never read files or env. */
export interface AppServices extends AccountServices, RemoteControlServices {
  readonly serverInfo: ServerInfo
  /** Opens each session's engine upstream at `initialize`. */
  readonly engine: SessionEngine
}
