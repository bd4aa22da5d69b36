-- wrk script: a Roistat lead webhook with a unique lead id per request.
-- TOKEN comes from the environment; ids are "<run>-<thread>-<n>".
local threads = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  n = 0
  run = os.getenv("RUN_ID") or tostring(os.time())
  token = os.getenv("TOKEN")
  rest = "&visit=12852&title=Caught+lead%3A+79990001122&text=Data+of+the+form%3A+79990001122"
    .. "&name=Robert&phone=%2B79990001122&email=robert%40example.com"
    .. "&data=%7B%22page%22%3A%22https%3A%5C%2F%5C%2Fexample.com%5C%2F%22%2C%22640163%22%3A%22test%22%7D"
    .. "&created_date=2015-06-28+09%3A12%3A54"
end

function request()
  n = n + 1
  local path = "/webhook?user=bench&token=" .. token .. "&action=lead&id=" .. run .. "-" .. thread_id .. "-" .. n .. rest
  return wrk.format("GET", path)
end
