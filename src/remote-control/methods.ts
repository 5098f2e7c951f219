import { Type } from '../util/typebox.js'
import { defineMethod, type MethodDefinition } from '../rpc/method.js'
import type { RemoteControlStatusView } from './types.js'
import { Nullable } from '../util/typebox-nullable.js'

/** What the `remoteControl/*` handlers need: the controller, seen through this narrow door. */
export interface RemoteControlApi {
  enable(): Promise<RemoteControlStatusView>
  disable(): Promise<RemoteControlStatusView>
  status(): RemoteControlStatusView
}

export interface RemoteControlServices {
  readonly remoteControl: RemoteControlApi
}

export const RemoteControlStatusSchema = Type.Object({
  status: Type.Union([Type.Literal('disabled'), Type.Literal('connecting'), Type.Literal('connected'), Type.Literal('errored')]),
  serverName: Type.String(),
  installationId: Type.String(),
  environmentId: Nullable(Type.String()),
})

export function remoteControlMethods<S extends RemoteControlServices>(): MethodDefinition<S, any>[] {
  return [
    defineMethod<S, null>({
      name: 'remoteControl/enable',
      scope: 'remote:write',
      params: null,
      result: RemoteControlStatusSchema,
      handler: (_p, { services }) => services.remoteControl.enable(),
    }),
    defineMethod<S, null>({
      name: 'remoteControl/disable',
      scope: 'remote:write',
      params: null,
      result: RemoteControlStatusSchema,
      handler: (_p, { services }) => services.remoteControl.disable(),
    }),
    defineMethod<S, null>({
      name: 'remoteControl/status/read',
      scope: 'account:read',
      params: null,
      result: RemoteControlStatusSchema,
      handler: (_p, { services }) => services.remoteControl.status(),
    }),
  ]
}
