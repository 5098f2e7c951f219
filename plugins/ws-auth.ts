import fp from 'fastify-plugin'
import { AuthPolicy, type AuthPolicyOptions } from '../src/auth/policy.js'

declare module 'fastify' {
  interface FastifyInstance {
    wsAuth: AuthPolicy
  }
}

/** Decorates the app with the upgrade auth policy built from `config.auth`. */
export default fp<AuthPolicyOptions>(
  async (app, opts) => {
    app.decorate('wsAuth', new AuthPolicy(app.config.auth, opts))
  },
  { name: 'ws-auth', fastify: '5.x', decorators: { fastify: ['config'] } },
)
