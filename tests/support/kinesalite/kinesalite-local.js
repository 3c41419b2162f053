// Start kinesalite bound to the loopback interface only (its CLI listens on all interfaces).
// Usage: node kinesalite-local.js PORT
'use strict'
const port = parseInt(process.argv[2] || '4567', 10)
const server = require('kinesalite')({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100})
server.listen(port, '127.0.0.1', function (err) {
  if (err) throw err
  console.log('kinesalite listening on 127.0.0.1:' + port)
})
