// connection.cpp: Pipe, wait, Listener and Client, and the authkey handshake run by hand, in
// one page (Python: multiprocessing.Pipe, multiprocessing.connection).
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;
using namespace std::chrono_literals;

// A child that squares every number it receives; a negative number ends it.
void squarer(mp::Connection conn) {
  for (int n; (n = conn.recv<int>()) >= 0;) conn.send(n * n);
}

// A child that reports after a while.
void reporter(int id, mp::Connection conn) {
  std::this_thread::sleep_for(std::chrono::milliseconds(30 * (3 - id)));
  conn.send(std::string("worker ") + std::to_string(id) + " done");
}

// A child that connects to a Listener with an authkey.
void client(std::string address, std::string key) {
  try {
    auto conn = mp::connection::Client(address, key);
    conn.send_bytes(std::string_view("hello over TCP"));
    std::cout << "client got: " << conn.recv_bytes() << std::endl;
  } catch (const mp::AuthenticationError& e) {
    std::cout << "client refused: " << e.what() << std::endl;
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);

  // 1. A duplex Pipe between parent and child.
  auto [parent_end, child_end] = mp::Pipe();
  mp::Process sq(squarer, std::move(child_end));
  sq.start();  // the parent's copy of child_end is released here
  for (int i = 1; i <= 4; ++i) {
    parent_end.send(i);
    std::cout << i << " squared is " << parent_end.recv<int>() << std::endl;
  }
  parent_end.send(-1);
  sq.join();
  try {
    parent_end.recv<int>();
  } catch (const mp::EOFError&) {
    std::cout << "the child's end is closed: EOFError" << std::endl;
  }

  // 2. wait(): whichever of several children speaks first, and their sentinels.
  std::vector<mp::Connection> readers;
  std::vector<mp::Process> workers;
  for (int id = 0; id < 3; ++id) {
    auto [rx, tx] = mp::Pipe(false);  // rx receives only, tx sends only
    readers.push_back(std::move(rx));
    workers.emplace_back(reporter, id, std::move(tx));
    workers.back().start();
  }
  std::vector<mp::Connection*> pending;
  for (auto& r : readers) pending.push_back(&r);
  while (!pending.empty()) {
    for (mp::Connection* ready : mp::connection::wait(pending, 5s)) {
      std::cout << ready->recv<std::string>() << std::endl;
      std::erase(pending, ready);
    }
  }
  for (auto& w : workers) mp::connection::wait({w.sentinel()});  // ended: sentinel readable
  for (auto& w : workers) w.join();

  // 3. A Listener and a Client in another process, with an authkey.
  mp::connection::Listener listener("127.0.0.1:0", "secret");
  std::cout << "listening on " << listener.address() << std::endl;
  mp::Process good(client, listener.address(), std::string("secret"));
  good.start();
  auto conn = listener.accept();
  std::cout << "listener got: " << conn.recv_bytes() << std::endl;
  conn.send_bytes(std::string_view("welcome"));
  good.join();

  mp::Process bad(client, listener.address(), std::string("guess"));
  bad.start();
  try {
    listener.accept();
  } catch (const mp::AuthenticationError& e) {
    std::cout << "listener refused a client: " << e.what() << std::endl;
  }
  bad.join();

  // 4. The handshake run by hand: accept at once (a Listener without a key), then
  //    authenticate in a thread of its own, so that a slow or silent client holds up nobody.
  mp::connection::Listener open_listener("127.0.0.1:0");
  mp::Process third(client, open_listener.address(), std::string("secret"));
  third.start();
  auto raw = open_listener.accept();  // no handshake yet
  std::thread authenticator([&raw] {
    try {
      mp::connection::deliver_challenge(raw, "secret", 5s);
      mp::connection::answer_challenge(raw, "secret", 5s);
      std::cout << "authenticated by hand: " << raw.recv_bytes() << std::endl;
      raw.send_bytes(std::string_view("welcome"));
    } catch (const mp::AuthenticationError& e) {
      std::cout << "refused by hand: " << e.what() << std::endl;
    }
  });
  authenticator.join();
  third.join();
}
