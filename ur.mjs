import http from 'node:http';
import WebSocket from 'ws';
const s = http.createServer((req,res)=>{res.writeHead(502,{'content-type':'text/plain'}); res.end('bad gateway');});
s.listen(0,'127.0.0.1',()=>{
  const t=Date.now();
  const ws = new WebSocket(`ws://127.0.0.1:${s.address().port}/ws`, {handshakeTimeout:10000});
  ws.on('unexpected-response',(req,res)=>console.log('unexpected',res.statusCode, Date.now()-t));
  ws.on('error',e=>console.log('error',e.message,Date.now()-t));
  ws.on('close',()=>{console.log('close',Date.now()-t); s.close();});
});
