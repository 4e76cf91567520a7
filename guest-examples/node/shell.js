// exec through a shell the host did not grant, then through the one it did:
// run only by `wasmproc run --allow-shell /bin/sh` (tests/node_compat.rs).
const cp = require('child_process');

cp.exec('echo hi', { shell: '/bin/bash' }, function (err, stdout) {
  console.log('bash: ' + (err ? err.code + ' | ' + err.message : stdout.trim()));
  cp.exec('echo hi', { shell: '/bin/sh' }, function (err, stdout) {
    console.log('sh: ' + (err ? err.code : stdout.trim()));
  });
});
