// Lint: typescript-eslint's type-checked recommended rules over every TypeScript
// tree that tsc compiles (src plugins routes test bench). Type information comes
// from the project service, so the lint sees exactly what `tsc` sees.
import js from '@eslint/js'
import { defineConfig } from 'eslint/config'
import tseslint from 'typescript-eslint'

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', '.tap/', '.ci/', 'eslint.config.js'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    files: ['{src,plugins,routes,test,bench}/**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Fastify's plugin, hook and handler contract is "async function or callback", and
      // store/service interfaces return promises: an `async` body with nothing to await is
      // how those contracts are met here, and dropping `async` would turn a rejected
      // promise into a synchronous throw.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // tap queues every `t.test(...)` subtest and awaits it itself before the parent ends,
      // so the promise `t.test` returns is tracked even when the caller drops it. Every other
      // promise in a test must still be awaited or handled.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: '@tapjs/test', name: 'test' }],
      }],
    },
  },
)
