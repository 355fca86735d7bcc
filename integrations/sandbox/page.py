"""A read-only HTML view of the sandboxes at GET /sandbox/ on the Bitrix24 sandbox port (deals, contacts, n8n events).

The page fetches /sandbox/state (same origin) and the n8n receiver's /sandbox/events (CORS allowed) every 2 s and
renders them with textContent only (CRM values are never interpreted as HTML).
"""

import html
import json

from .bitrix24 import BitrixSandbox
from .bitrix24.server import Reply

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.5rem}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.muted{color:#777}code{font-size:12px}
</style></head><body>
<h1>Sandbox portal <span class="muted" id="updated"></span></h1>
<p class="muted">Read-only. Bitrix24 sandbox state: <code>/sandbox/state</code>; n8n receiver: <code>__N8N__</code></p>
<h2>Deals (<span id="deal-count">0</span>)</h2>
<table id="deals"><thead><tr><th>ID</th><th>TITLE</th><th>STAGE_ID</th><th>OPPORTUNITY</th><th>CURRENCY_ID</th>
<th>ORIGINATOR_ID</th><th>ORIGIN_ID</th><th>CONTACT_IDS</th><th>DATE_MODIFY</th></tr></thead><tbody></tbody></table>
<h2>Contacts (<span id="contact-count">0</span>)</h2>
<table id="contacts"><thead><tr><th>ID</th><th>NAME</th><th>LAST_NAME</th><th>EMAIL</th><th>PHONE</th>
<th>ORIGIN_ID</th></tr></thead><tbody></tbody></table>
<h2>n8n events (<span id="event-count">0</span>, duplicates <span id="dup-count">0</span>,
rejected <span id="rej-count">0</span>)</h2>
<table id="events"><thead><tr><th>received</th><th>type</th><th>object</th><th>sequence</th><th>changes</th>
<th>status</th><th>duplicate</th></tr></thead><tbody></tbody></table>
<h2>Stats</h2><pre id="stats"></pre>
<script>
const N8N = __N8N_JSON__;
function multi(v){return Array.isArray(v)?v.map(e=>e&&e.VALUE).filter(Boolean).join(", "):(v??"")}
function fill(id, rows){
  const body=document.querySelector("#"+id+" tbody"); body.replaceChildren();
  for(const row of rows){const tr=document.createElement("tr");
    for(const v of row){const td=document.createElement("td");
      td.textContent=(v===null||v===undefined)?"":(typeof v==="object"?JSON.stringify(v):String(v));tr.appendChild(td)}
    body.appendChild(tr)}
}
async function refresh(){
  try{
    const s=await (await fetch("/sandbox/state")).json();
    const deals=[...s.deals].sort((a,b)=>b.ID-a.ID), contacts=[...s.contacts].sort((a,b)=>b.ID-a.ID);
    fill("deals",deals.map(d=>[d.ID,d.TITLE,d.STAGE_ID,d.OPPORTUNITY,d.CURRENCY_ID,d.ORIGINATOR_ID,d.ORIGIN_ID,
      (d.CONTACT_IDS||[]).join(", "),d.DATE_MODIFY]));
    fill("contacts",contacts.map(c=>[c.ID,c.NAME,c.LAST_NAME,multi(c.EMAIL),multi(c.PHONE),c.ORIGIN_ID]));
    document.getElementById("deal-count").textContent=deals.length;
    document.getElementById("contact-count").textContent=contacts.length;
    document.getElementById("stats").textContent=JSON.stringify(s.stats,null,1);
  }catch(e){document.getElementById("stats").textContent="Bitrix24 sandbox unreachable: "+e}
  if(N8N){try{
    const n=await (await fetch(N8N)).json();
    const ev=[...n.events].reverse().slice(0,200);
    fill("events",ev.map(e=>{const b=e.body||{};return [new Date(e.received_at*1000).toLocaleTimeString(),b.type,
      b.object?b.object.type+" "+b.object.id:"",b.sequence,b.changes,e.status,e.duplicate?"yes":""]}));
    document.getElementById("event-count").textContent=n.unique;
    document.getElementById("dup-count").textContent=n.duplicates;
    document.getElementById("rej-count").textContent=n.rejected;
  }catch(e){fill("events",[["n8n receiver unreachable: "+e]])}}
  document.getElementById("updated").textContent="· "+new Date().toLocaleTimeString();
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""


def render_page(n8n_events_url: str = "") -> bytes:
    text = PAGE.replace("__N8N_JSON__", json.dumps(n8n_events_url)).replace(
        "__N8N__", html.escape(n8n_events_url or "-")
    )
    return text.encode()


class PagedBitrixSandbox(BitrixSandbox):
    """BitrixSandbox that also answers GET /sandbox/ with the HTML page."""

    n8n_events_url: str = ""

    def handle(self, verb: str, raw_path: str, content_type: str, body: bytes, request_id: str = "") -> Reply:
        path = raw_path.partition("?")[0]
        if verb == "GET" and path in ("/sandbox", "/sandbox/", "/sandbox/index.html"):
            return Reply(status=200, body=render_page(self.n8n_events_url), content_type="text/html; charset=utf-8")
        return super().handle(verb, raw_path, content_type, body, request_id)
