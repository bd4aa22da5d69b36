-- wrk script: Roistat lead webhooks with unique lead ids, each with a phone and an
-- e-mail of a person; about 30% come from a person seen before (a random earlier
-- one of this thread), the rest from a new person. TOKEN comes from the environment.
local threads = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  n = 0
  people = 0
  run = os.getenv("RUN_ID") or tostring(os.time())
  token = os.getenv("TOKEN")
  math.randomseed(thread_id + 1)
  base = 9000000 + (thread_id * 1000000) % 900000 + (os.time() % 97) * 7919
end

function request()
  n = n + 1
  local person
  if people > 0 and math.random() < 0.3 then
    person = math.random(people)
  else
    people = people + 1
    person = people
  end
  local digits = string.format("%07d", (base + person) % 10000000)
  local path = "/webhook?user=bench&token=" .. token .. "&action=lead&id=" .. run .. "-" .. thread_id .. "-" .. n
    .. "&visit=12852&title=Caught+lead&text=Data+of+the+form"
    .. "&name=Robert&phone=%2B7+%28999%29+" .. digits
    .. "&email=p" .. thread_id .. "-" .. person .. "%40example.com"
    .. "&created_date=2015-06-28+09%3A12%3A54"
  return wrk.format("GET", path)
end
