// fanout DIR K PROGRAM [ARGS...] -- the JavaScript version of
// guest-examples/fanout (same output, byte for byte).
//
// Runs `PROGRAM ARGS... NAME` in DIR for every regular file NAME in DIR, at
// most K at once, streaming each child's stdout as it arrives; then prints,
// sorted by name,
//
//     NAME: <the child's stdout, trimmed>   (" [exited N]" / " [signaled N]" if it failed)
//     N files, at most M at once
//
// If a child cannot be started: `error: <error-code>` (such as
// `access-denied`) on stdout, the host's message on stderr, exit 1.
//
// Built with componentize-js for the world wasmproc:process/command: a
// wasi:cli command, so it exports wasi:cli/run (`run` below). Every WIT
// interface of the world is an ES module; a result's error is thrown, with
// the error-code value ({ tag: 'access-denied', val: message }) as its
// `payload`.

import { spawn } from 'wasmproc:process/spawn@0.2.0';
import { poll } from 'wasi:io/poll@0.2.12';
import { getArguments } from 'wasi:cli/environment@0.2.12';
import { getStdout } from 'wasi:cli/stdout@0.2.12';
import { getStderr } from 'wasi:cli/stderr@0.2.12';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

const encoder = new TextEncoder();

function write(stream, text) {
  const bytes = encoder.encode(text);
  // blocking-write-and-flush takes at most 4096 bytes at a time.
  for (let i = 0; i < bytes.length; i += 4096) {
    stream.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
  }
}

// Resources are dropped explicitly (a stream and its pollables before the
// child they belong to).
function drop(resource) {
  resource[Symbol.dispose]();
}

// The error-code value a failed call threw.
function errorCode(e) {
  return e && typeof e === 'object' && 'payload' in e ? e.payload : e;
}

// The names of the regular files in the directory `path`, which must be a
// preopen (or inside one).
function listFiles(path) {
  const clean = (p) => p.replace(/\/+$/, '') || '/';
  const want = clean(path);
  for (const [dir, guestPath] of getDirectories()) {
    const base = clean(guestPath);
    let rel;
    if (want === base) rel = '.';
    else if (want.startsWith(base === '/' ? '/' : base + '/')) rel = want.slice(base.length).replace(/^\/+/, '');
    else continue;
    const d = rel === '.' ? dir : dir.openAt({ symlinkFollow: true }, rel, { directory: true }, { read: true });
    const entries = d.readDirectory();
    const names = [];
    for (;;) {
      const entry = entries.readDirectoryEntry();
      if (entry === undefined) break;
      if (entry.type === 'regular-file') names.push(entry.name);
    }
    drop(entries);
    if (d !== dir) drop(d);
    return names;
  }
  throw new Error(`${path}: not a granted directory`);
}

function byName(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function fanout(argv, out, err) {
  if (argv.length < 4) {
    write(err, 'usage: fanout DIR K PROGRAM [ARGS...]\n');
    return 1;
  }
  const [, dir, kText, program, ...extra] = argv;
  const k = /^[0-9]+$/.test(kText) ? Number(kText) : 0;
  if (k <= 0) {
    write(err, 'fanout: K must be a positive number\n');
    return 1;
  }

  const names = listFiles(dir).sort(byName);
  const queue = [...names];
  const running = [];
  const done = [];
  let most = 0;
  const decoder = new TextDecoder();
  while (queue.length > 0 || running.length > 0) {
    while (running.length < k && queue.length > 0) {
      const name = queue.shift();
      let child;
      try {
        child = spawn(program, [...extra, name], {
          cwd: dir,
          env: [],
          stdin: { tag: 'null' }, // stdio is a variant
          stdout: { tag: 'piped' },
          stderr: { tag: 'inherit' },
          uid: undefined, // the host's child user and group
          gid: undefined,
          timeoutMs: undefined, // no deadline
          killSignal: undefined,
        });
      } catch (e) {
        const code = errorCode(e);
        write(out, `error: ${code.tag}\n`);
        write(err, `fanout: spawn ${program}: ${code.tag}: ${code.val}\n`);
        return 1;
      }
      running.push({ name, child, stdout: child.takeStdout(), chunks: [], status: undefined });
    }
    most = Math.max(most, running.length);

    // One poll over every open stdout and every child not yet exited.
    const sources = [];
    const pollables = [];
    for (const job of running) {
      if (job.stdout !== undefined) {
        pollables.push(job.stdout.subscribe());
        sources.push([job, true]);
      }
      if (job.status === undefined) {
        pollables.push(job.child.subscribe());
        sources.push([job, false]);
      }
    }
    const ready = poll(pollables);
    pollables.forEach(drop);
    for (const index of ready) {
      const [job, isStdout] = sources[index];
      if (isStdout) {
        try {
          job.chunks.push(job.stdout.read(65536n));
        } catch (e) {
          drop(job.stdout);
          job.stdout = undefined;
        }
      } else {
        const ended = job.child.tryWait(); // a termination, or undefined
        job.status = ended === undefined ? undefined : ended.status;
      }
    }

    for (const job of running.filter((j) => j.stdout === undefined && j.status !== undefined)) {
      running.splice(running.indexOf(job), 1);
      drop(job.child);
      const bytes = new Uint8Array(job.chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of job.chunks) {
        bytes.set(c, at);
        at += c.length;
      }
      let line = decoder.decode(bytes).replace(/^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g, '');
      if (job.status.tag === 'exited' && job.status.val !== 0) line += ` [exited ${job.status.val}]`;
      else if (job.status.tag === 'signaled') line += ` [signaled ${job.status.val}]`;
      done.push([job.name, line]);
    }
  }

  done.sort((a, b) => byName(a[0], b[0]));
  write(out, done.map(([name, line]) => `${name}: ${line}\n`).join(''));
  write(out, `${names.length} files, at most ${most} at once\n`);
  return 0;
}

export const run = {
  run() {
    const out = getStdout();
    const err = getStderr();
    const code = fanout(getArguments(), out, err);
    drop(out);
    drop(err);
    if (code !== 0) throw new Error(`fanout failed (${code})`);
  },
};
