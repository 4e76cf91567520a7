// Node modules this package does not provide yet (`fs`, `os`, `net`):
// requiring one succeeds, so a script that only requires it (as the
// child_process tutorial's requires `fs`) builds and runs; using any of its
// members throws an error that names it. CommonJS, so that `require('fs')`
// is the module itself.

function unsupported(name) {
  return new Proxy(
    {},
    {
      get(_, member) {
        if (member === '__esModule' || typeof member === 'symbol') return undefined;
        const err = new Error(`${name}.${String(member)} is not available in wasmproc guests (wasmproc-child-process provides child_process, events, buffer, util and path)`);
        err.code = 'ERR_WASMPROC_UNSUPPORTED';
        throw err;
      },
    },
  );
}

module.exports = { unsupported };
