// The `os` module: not provided (see unsupported.cjs).
module.exports = require('./unsupported.cjs').unsupported('os');
