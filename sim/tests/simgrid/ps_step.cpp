// The synchronous parameter-server step of topolab's simulator (sim/src/training.rs, the rules
// in core/src/step.rs), run by SimGrid's C++ engine: the same workload for the speed
// comparison of issue 16 and the cross-check of its mean step time.
//
// Input: the workload file `topolab_sim::simgrid_workload` writes (NICs, latency, per-message
// overhead, layer times, parts and their shards, apply times, every worker's compute factor
// per step). SimGrid's plain max-min model (CM02, every TCP correction off) moves the bytes:
// one host per worker and per shard, each with an up and a down link of the NIC's goodput.
// Every connection (worker to shard, shard to worker) is an actor that sends its queued
// messages one after another; deliveries come `latency` after a message's last byte; each
// worker's compute and each shard's updates are actors too.
//
// Output (stdout): `steps N mean_step_s X` over every worker's every step.
//
// Build: g++ -O2 -std=c++17 ps_step.cpp -lsimgrid -o ps_step

#include <simgrid/s4u.hpp>

#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sg4 = simgrid::s4u;

namespace {

struct Part {
  int layer;
  int shard;
  double bytes;
  double apply_ns;
};

struct Workload {
  double nic = 0;  // bytes per second, per direction
  double latency_ns = 0;
  double overhead_bytes = 0;
  double copy_factor = 1;
  double request_bytes = 16;
  bool overlap = true;
  int workers = 0, shards = 0, layers = 0;
  long steps = 0;
  std::vector<double> fwd, bwd;
  std::vector<Part> parts;
  std::vector<std::vector<double>> factor;  // [worker][step]
};

void expect(std::istream& in, const std::string& word) {
  std::string w;
  in >> w;
  if (w != word)
    throw std::runtime_error("workload: expected '" + word + "', found '" + w + "'");
}

Workload load(const char* path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error(std::string("cannot read ") + path);
  Workload w;
  std::string line;
  std::getline(in, line);  // the header comment
  expect(in, "nic_bytes_per_s"), in >> w.nic;
  expect(in, "latency_ns"), in >> w.latency_ns;
  expect(in, "overhead_bytes"), in >> w.overhead_bytes;
  expect(in, "copy_factor"), in >> w.copy_factor;
  expect(in, "request_bytes"), in >> w.request_bytes;
  int overlap;
  expect(in, "overlap"), in >> overlap;
  w.overlap = overlap != 0;
  expect(in, "workers"), in >> w.workers;
  expect(in, "shards"), in >> w.shards;
  expect(in, "steps"), in >> w.steps;
  expect(in, "layers"), in >> w.layers;
  w.fwd.resize(w.layers);
  w.bwd.resize(w.layers);
  expect(in, "fwd");
  for (auto& x : w.fwd)
    in >> x;
  expect(in, "bwd");
  for (auto& x : w.bwd)
    in >> x;
  int parts;
  expect(in, "parts"), in >> parts;
  for (int i = 0; i < parts; i++) {
    Part p;
    expect(in, "part"), in >> p.layer >> p.shard >> p.bytes >> p.apply_ns;
    w.parts.push_back(p);
  }
  expect(in, "factors");
  w.factor.assign(w.workers, std::vector<double>(w.steps));
  for (auto& row : w.factor)
    for (auto& x : row)
      in >> x;
  if (!in)
    throw std::runtime_error("workload: truncated");
  return w;
}

enum class Kind { Pull, Push, Request, Ready, Fetch };

struct Msg {
  Kind kind;
  int worker, shard, part;
  long step;
  double bytes;
};

// An actor that sleeps while it has nothing to do; whoever gives it work wakes it.
struct Sleeper {
  sg4::ActorPtr actor;
  bool idle = false;
  void wake() {
    if (idle) {
      idle = false;
      actor->resume();
    }
  }
  void wait() {
    idle = true;
    sg4::this_actor::suspend();
  }
};

struct Conn : Sleeper {
  sg4::Host* from;
  sg4::Host* to;
  std::deque<Msg> queue;
};

struct WorkerState : Sleeper {
  long step = 0;
  double step_start = 0;
  std::vector<int> missing;
  int next_forward = 0, next_backward = 0;
  bool in_backward = false, computing = false;
  double factor = 1;
  int readies = 0;
  bool finished = false;
  double pending_ns = -1;  // compute the actor runs next
};

struct ShardState : Sleeper {
  std::vector<long> agg_step;
  std::vector<int> received;
  int parts = 0, applied = 0;
  long ready_for = 0;
  int last_push = -1;  // its lowest part: the last one pushed in a step
  std::vector<std::pair<int, long>> waiting;
  std::deque<std::pair<double, int>> applies;  // (ns, part)
};

struct Sim {
  Workload w;
  std::vector<std::vector<int>> layer_parts;
  std::vector<Conn> push, pull;  // [worker * shards + shard]
  std::vector<WorkerState> workers;
  std::vector<ShardState> shards;
  Sleeper delivery;
  std::deque<std::pair<double, Msg>> deliveries;
  Sleeper main;
  int done = 0;
  double total_step_s = 0;
  long records = 0;

  double now() const { return sg4::Engine::get_clock(); }

  void send(Conn& c, double bytes, Msg m) {
    m.bytes = bytes * w.copy_factor + w.overhead_bytes;
    c.queue.push_back(m);
    c.wake();
  }

  void start_step(int i) {
    auto& st = workers[i];
    st.step_start = now();
    st.missing.assign(w.layers, 0);
    for (auto& p : w.parts)
      st.missing[p.layer]++;
    st.next_forward = st.next_backward = 0;
    st.in_backward = st.computing = false;
    st.factor = w.factor[i][st.step];
    for (int s = 0; s < w.shards; s++)
      send(push[i * w.shards + s], w.request_bytes, Msg{Kind::Fetch, i, s, -1, st.step, 0});
  }

  void deliver(const Msg& m) {
    switch (m.kind) {
      case Kind::Pull: {
        auto& st = workers[m.worker];
        st.missing[w.parts[m.part].layer]--;
        try_forward(m.worker);
        break;
      }
      case Kind::Push:
        push_arrived(m.worker, m.part, m.step);
        break;
      case Kind::Request:
        if (m.step <= ready_for(m.shard))
          answer(m.worker, m.shard, m.step);
        else
          shards[m.shard].waiting.emplace_back(m.worker, m.step);
        break;
      case Kind::Fetch:
        for (size_t p = 0; p < w.parts.size(); p++)
          if (w.parts[p].shard == m.shard)
            send(pull[m.worker * w.shards + m.shard], w.parts[p].bytes,
                 Msg{Kind::Pull, m.worker, m.shard, int(p), m.step, 0});
        break;
      case Kind::Ready: {
        auto& st = workers[m.worker];
        if (st.finished)
          return;
        if (++st.readies == w.shards) {
          st.readies = 0;
          end_step(m.worker);
        }
        break;
      }
    }
  }

  long ready_for(int s) const { return shards[s].parts == 0 ? (1L << 62) : shards[s].ready_for; }

  void answer(int worker, int shard, long step) {
    send(pull[worker * w.shards + shard], w.request_bytes, Msg{Kind::Ready, worker, shard, -1, step, 0});
  }

  void try_forward(int i) {
    auto& st = workers[i];
    if (st.computing || st.in_backward || st.next_forward >= w.layers || st.missing[st.next_forward] > 0)
      return;
    int end = st.next_forward;
    double ns = 0;
    while (end < w.layers && st.missing[end] == 0)
      ns += w.fwd[end++];
    st.next_forward = end;
    run_compute(i, ns);
  }

  void run_compute(int i, double ns) {
    auto& st = workers[i];
    st.computing = true;
    st.pending_ns = std::round(ns * st.factor);
    st.wake();
  }

  void compute_done(int i) {
    auto& st = workers[i];
    st.computing = false;
    if (!st.in_backward) {
      if (st.next_forward < w.layers) {
        try_forward(i);
        return;
      }
      st.in_backward = true;
      st.next_backward = w.layers;
      next_backward_chain(i);
      return;
    }
    int nb = st.next_backward;
    std::vector<int> finished;
    if (w.overlap)
      finished.push_back(nb);
    else
      for (int l = w.layers - 1; l >= 0; l--)
        finished.push_back(l);
    for (int l : finished)
      for (int k = int(layer_parts[l].size()) - 1; k >= 0; k--)
        push_part(i, layer_parts[l][k], st.step);
    if (nb == 0 || !w.overlap) {
      st.next_backward = 0;
      for (int s = 0; s < w.shards; s++)
        if (shards[s].last_push < 0)
          request(i, s, st.step + 1);
    } else {
      next_backward_chain(i);
    }
  }

  void next_backward_chain(int i) {
    auto& st = workers[i];
    int l = st.next_backward;
    double ns = 0;
    while (true) {
      l--;
      ns += w.bwd[l];
      if (l == 0 || (w.overlap && !layer_parts[l].empty()))
        break;
    }
    st.next_backward = l;
    run_compute(i, ns);
  }

  void request(int i, int s, long step) { send(push[i * w.shards + s], w.request_bytes, Msg{Kind::Request, i, s, -1, step, 0}); }

  void push_part(int i, int part, long step) {
    int s = w.parts[part].shard;
    send(push[i * w.shards + s], w.parts[part].bytes, Msg{Kind::Push, i, s, part, step, 0});
    if (shards[s].last_push == part)
      request(i, s, step + 1);
  }

  void push_arrived(int /*worker*/, int part, long step) {
    auto& sh = shards[w.parts[part].shard];
    if (step != sh.agg_step[part])
      return;
    if (++sh.received[part] < w.workers)
      return;
    sh.agg_step[part]++;
    sh.received[part] = 0;
    sh.applies.emplace_back(w.parts[part].apply_ns, part);
    sh.wake();
  }

  void apply_done(int s) {
    auto& sh = shards[s];
    if (++sh.applied < sh.parts)
      return;
    sh.applied = 0;
    sh.ready_for++;
    std::vector<std::pair<int, long>> later;
    auto waiting = std::move(sh.waiting);
    sh.waiting.clear();
    for (auto [worker, step] : waiting) {
      if (step <= sh.ready_for)
        answer(worker, s, step);
      else
        later.emplace_back(worker, step);
    }
    shards[s].waiting = later;
  }

  long global_step() const {
    long g = 1L << 62;
    for (int s = 0; s < w.shards; s++)
      g = std::min(g, ready_for(s));
    return g;
  }

  void end_step(int i) {
    auto& st = workers[i];
    total_step_s += now() - st.step_start;
    records++;
    st.step++;
    if (st.step >= w.steps || global_step() >= w.steps) {
      st.finished = true;
      if (++done == w.workers)
        main.wake();
      return;
    }
    start_step(i);
  }
};

Sim* sim;

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: ps_step WORKLOAD\n";
    return 2;
  }
  // SimGrid's plain max-min model, configured as sim/tests/simgrid/plain.py configures it.
  std::vector<std::string> cfg = {argv[0],
                                  "--cfg=network/model:CM02",
                                  "--cfg=network/crosstraffic:0",
                                  "--cfg=network/latency-factor:1",
                                  "--cfg=network/bandwidth-factor:1",
                                  "--cfg=network/weight-S:0",
                                  "--cfg=maxmin/precision:1e-9",
                                  "--cfg=surf/precision:1e-9",
                                  "--log=root.thres:critical"};
  std::vector<char*> args;
  for (auto& s : cfg)
    args.push_back(s.data());
  int n = int(args.size());
  sg4::Engine e(&n, args.data());

  Sim s;
  sim = &s;
  try {
    s.w = load(argv[1]);
  } catch (const std::exception& ex) {
    std::cerr << ex.what() << "\n";
    return 2;
  }
  auto& w = s.w;
  auto* zone = sg4::create_full_zone("cluster");
  std::vector<sg4::Host*> wh, sh;
  std::vector<sg4::Link*> wup, wdown, sup, sdown;
  auto nic = [&](const std::string& name) { return zone->create_link(name, w.nic)->set_latency(0)->seal(); };
  for (int i = 0; i < w.workers; i++) {
    wh.push_back(zone->create_host("w" + std::to_string(i), 1e9)->seal());
    wup.push_back(nic("w" + std::to_string(i) + "-up"));
    wdown.push_back(nic("w" + std::to_string(i) + "-down"));
  }
  for (int j = 0; j < w.shards; j++) {
    sh.push_back(zone->create_host("ps" + std::to_string(j), 1e9)->seal());
    sup.push_back(nic("ps" + std::to_string(j) + "-up"));
    sdown.push_back(nic("ps" + std::to_string(j) + "-down"));
  }
  for (int i = 0; i < w.workers; i++)
    for (int j = 0; j < w.shards; j++) {
      zone->add_route(wh[i]->get_netpoint(), sh[j]->get_netpoint(), nullptr, nullptr,
                      {sg4::LinkInRoute(wup[i]), sg4::LinkInRoute(sdown[j])}, false);
      zone->add_route(sh[j]->get_netpoint(), wh[i]->get_netpoint(), nullptr, nullptr,
                      {sg4::LinkInRoute(sup[j]), sg4::LinkInRoute(wdown[i])}, false);
    }
  zone->seal();

  s.layer_parts.assign(w.layers, {});
  for (size_t p = 0; p < w.parts.size(); p++)
    s.layer_parts[w.parts[p].layer].push_back(int(p));
  s.shards.resize(w.shards);
  for (auto& shard : s.shards) {
    shard.agg_step.assign(w.parts.size(), 0);
    shard.received.assign(w.parts.size(), 0);
  }
  for (size_t p = 0; p < w.parts.size(); p++) {
    auto& shard = s.shards[w.parts[p].shard];
    shard.parts++;
    if (shard.last_push < 0)
      shard.last_push = int(p);
  }
  s.workers.resize(w.workers);
  s.push.resize(size_t(w.workers) * w.shards);
  s.pull.resize(size_t(w.workers) * w.shards);

  auto conn_actor = [](Conn* c) {
    return [c]() {
      while (true) {
        while (c->queue.empty())
          c->wait();
        Msg m = c->queue.front();
        sg4::Comm::sendto(c->from, c->to, uint64_t(std::llround(m.bytes)));
        c->queue.pop_front();
        sim->deliveries.emplace_back(sg4::Engine::get_clock() + sim->w.latency_ns * 1e-9, m);
        sim->delivery.wake();
      }
    };
  };
  for (int i = 0; i < w.workers; i++)
    for (int j = 0; j < w.shards; j++) {
      Conn& up = s.push[i * w.shards + j];
      up.from = wh[i], up.to = sh[j];
      up.actor = sg4::Actor::create("push", wh[i], conn_actor(&up));
      up.actor->daemonize();
      Conn& down = s.pull[i * w.shards + j];
      down.from = sh[j], down.to = wh[i];
      down.actor = sg4::Actor::create("pull", sh[j], conn_actor(&down));
      down.actor->daemonize();
    }
  s.delivery.actor = sg4::Actor::create("delivery", wh[0], []() {
    while (true) {
      while (sim->deliveries.empty())
        sim->delivery.wait();
      double at = sim->deliveries.front().first;
      if (at > sg4::Engine::get_clock())
        sg4::this_actor::sleep_until(at);
      Msg m = sim->deliveries.front().second;
      sim->deliveries.pop_front();
      sim->deliver(m);
    }
  });
  s.delivery.actor->daemonize();
  for (int i = 0; i < w.workers; i++) {
    s.workers[i].actor = sg4::Actor::create("compute", wh[i], [i]() {
      auto& st = sim->workers[i];
      while (true) {
        while (st.pending_ns < 0)
          st.wait();
        double ns = st.pending_ns;
        st.pending_ns = -1;
        sg4::this_actor::sleep_for(ns * 1e-9);
        sim->compute_done(i);
      }
    });
    s.workers[i].actor->daemonize();
  }
  for (int j = 0; j < w.shards; j++) {
    s.shards[j].actor = sg4::Actor::create("apply", sh[j], [j]() {
      auto& shard = sim->shards[j];
      while (true) {
        while (shard.applies.empty())
          shard.wait();
        double ns = shard.applies.front().first;
        sg4::this_actor::sleep_for(ns * 1e-9);
        shard.applies.pop_front();
        sim->apply_done(j);
      }
    });
    s.shards[j].actor->daemonize();
  }
  s.main.actor = sg4::Actor::create("main", wh[0], []() {
    for (int i = 0; i < sim->w.workers; i++)
      sim->start_step(i);
    while (sim->done < sim->w.workers)
      sim->main.wait();
  });
  e.run();
  std::printf("steps %ld mean_step_s %.12f\n", s.records, s.records ? s.total_step_s / double(s.records) : 0.0);
  return 0;
}
