/**
 * bench/proc.ts, which the engine benchmark's CPU columns and its engine lookups read: CPU
 * seconds from `/proc/PID/stat` (a command name with spaces and parentheses included: fields
 * are counted after its last `)`), null for a process that is gone, and a process's children
 * (found by their parent field, read the same way). Linux only: skipped, saying
 * so, without `/proc`.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { childrenOf, cpuSeconds, cpuSecondsOf } from '../bench/proc.js'
import { until } from './helpers/wait.js'

const hasProc = existsSync('/proc/self/stat')

t.test('CPU seconds of real processes, a hostile command name included', { skip: hasProc ? false : 'no /proc on this system' }, async (t) => {
  // A child that renames itself to something that looks like more fields, then waits.
  const child = spawn(process.execPath, ['-e', "process.title = 'x) S 1 2 3 (y'; setInterval(() => {}, 1000)"], { stdio: 'ignore' })
  t.teardown(() => child.kill('SIGKILL'))
  const pid = child.pid!
  await until(() => childrenOf(process.pid).includes(pid), 'the child is listed')
  const own = cpuSecondsOf(process.pid)
  t.ok(own !== null && own > 0, `this process has used CPU (${own} s)`)
  const before = cpuSecondsOf(pid)
  t.ok(before !== null && before >= 0 && Number.isFinite(before), `the renamed child reads as a number (${before})`)
  const both = cpuSeconds([process.pid, pid])
  t.ok(both !== null && both >= own!, 'a list adds up')
  t.same(cpuSeconds([]), 0, 'an empty list is 0')
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
  t.equal(cpuSecondsOf(pid), null, 'a process that is gone reads as null')
  t.equal(cpuSeconds([process.pid, pid]), null, 'and so does any list that holds it')
  t.same(childrenOf(pid), [], 'a gone process has no children')
})
