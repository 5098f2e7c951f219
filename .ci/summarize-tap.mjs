// Reads raw TAP (tap's `tap` reporter) on stdin, echoes it, and ends with one line
// `N passed, N failed[, N skipped]` computed from the parsed results: every leaf assertion
// counts once; a subtest or file that failed without a failing assertion (a crash, a
// non-zero exit such as a canary leak) counts as one failure. Exits 1 on any failure, on a
// bail-out, or when no assertion ran at all.
import { Parser } from 'tap-parser'

function track(parser) {
  const stats = { pass: 0, fail: 0, skip: 0 }
  const children = []
  parser.on('child', (child) => children.push(track(child)))
  parser.on('assert', (a) => {
    if (children.length > 0) {
      // The summary line of a finished subtest: its leaves are already counted.
      const c = children.shift()
      stats.pass += c.pass
      stats.fail += c.fail + (!a.ok && !a.todo && !a.skip && c.fail === 0 ? 1 : 0)
      stats.skip += c.skip
    } else if (a.skip || a.todo) stats.skip++
    else if (a.ok) stats.pass++
    else stats.fail++
  })
  return stats
}

const parser = new Parser()
const stats = track(parser)
parser.on('complete', (results) => {
  const line = `${stats.pass} passed, ${stats.fail} failed` + (stats.skip > 0 ? `, ${stats.skip} skipped` : '')
  process.stdout.write('\n' + line + '\n')
  const ok = results.ok && stats.fail === 0 && !results.bailout && stats.pass > 0
  process.exitCode = ok ? 0 : 1
})
process.stdin.on('data', (chunk) => process.stdout.write(chunk))
process.stdin.pipe(parser)
