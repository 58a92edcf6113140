-- wrk script for scripts/wrk_reloads.py: sends one request shape (method, path, JSON body from
-- the environment) and counts the answers that are not 2xx, split by who gave them: the app
-- (its answers are JSON) or the proxy in front of it (nginx's error pages are HTML).
local threads = {}

wrk.method = os.getenv("WRK_METHOD") or "GET"
wrk.path = os.getenv("WRK_PATH") or "/"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
if os.getenv("WRK_HOST") then
  wrk.headers["Host"] = os.getenv("WRK_HOST")
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx_proxy = 0
  non2xx_app = 0
  last_proxy_status = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    local content_type = headers["content-type"] or headers["Content-Type"] or ""
    if string.find(content_type, "application/json", 1, true) then
      non2xx_app = non2xx_app + 1
    else
      non2xx_proxy = non2xx_proxy + 1
      last_proxy_status = status
    end
  end
end

function done(summary, latency, requests)
  local proxy, app, status = 0, 0, 0
  for _, thread in ipairs(threads) do
    proxy = proxy + thread:get("non2xx_proxy")
    app = app + thread:get("non2xx_app")
    if thread:get("last_proxy_status") ~= 0 then
      status = thread:get("last_proxy_status")
    end
  end
  io.write(string.format(
    "RESULT requests=%d non2xx_not_app=%d non2xx_app=%d last_not_app_status=%d "
      .. "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d p99_ms=%.1f\n",
    summary.requests, proxy, app, status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(99) / 1000))
end
