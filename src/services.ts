import type { AccountServices } from './account/methods.js'
import type { ServerInfo } from './rpc/methods/initialize.js'

/** What JSON-RPC handlers may use. Plugins build these; handlers never read files or env. */
export interface AppServices extends AccountServices {
  readonly serverInfo: ServerInfo
}
