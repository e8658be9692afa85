// queues.cpp: Queue, JoinableQueue and SimpleQueue in one page (Python: multiprocessing.Queue,
// JoinableQueue, SimpleQueue): producers and consumers in separate processes.
#include <chrono>
#include <iostream>
#include <multiprocessing.hpp>
#include <string>
#include <vector>
namespace mp = multiprocessing;
using namespace std::chrono_literals;

struct Job {
  int id;
  std::string text;
};

// Producers put jobs; each finishes with one "no more work" marker (id -1).
void producer(int first, int count, mp::Queue<Job> jobs) {
  for (int i = first; i < first + count; ++i) jobs.put({i, "job " + std::to_string(i)});
  jobs.put({-1, ""});
}

// A consumer turns jobs into results until it sees a marker.
void consumer(mp::Queue<Job> jobs, mp::Queue<std::string> results) {
  for (Job j = jobs.get(); j.id >= 0; j = jobs.get())
    results.put(j.text + " done by pid " + std::to_string(mp::current_process().pid()));
}

// A worker of a JoinableQueue marks each task done; the parent's join() waits for all.
void worker(mp::JoinableQueue<int> tasks, mp::Queue<int> squares) {
  for (;;) {
    int n = tasks.get();
    if (n >= 0) squares.put(n * n);
    tasks.task_done();
    if (n < 0) return;
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);

  // 1. Two producers, two consumers. A bounded queue (8 jobs) makes producers wait for
  //    consumers instead of running ahead.
  mp::Queue<Job> jobs(8);
  mp::Queue<std::string> results;
  std::vector<mp::Process> procs;
  procs.emplace_back(producer, 0, 5, jobs);
  procs.emplace_back(producer, 100, 5, jobs);
  procs.emplace_back(consumer, jobs, results);
  procs.emplace_back(consumer, jobs, results);
  for (auto& p : procs) p.start();
  for (int i = 0; i < 10; ++i) std::cout << results.get() << "\n";
  for (auto& p : procs) p.join();

  // 2. Timed and non-blocking forms: nothing waits forever.
  if (auto r = results.get_for(50ms); !r) std::cout << "no more results after 50 ms\n";
  if (!results.try_get()) std::cout << "try_get on an empty queue returns at once\n";

  // 3. JoinableQueue: join() returns once every task was marked done.
  mp::JoinableQueue<int> tasks;
  mp::Queue<int> squares;
  mp::Process w(worker, tasks, squares);
  w.start();
  for (int n = 1; n <= 5; ++n) tasks.put(n);
  tasks.join();
  int sum = 0;
  for (int i = 0; i < 5; ++i) sum += squares.get();
  std::cout << "all tasks done; sum of squares = " << sum << "\n";
  tasks.put(-1);
  w.join();

  // 4. SimpleQueue: put, get, empty.
  mp::SimpleQueue<std::string> sq;
  mp::Process child([sq]() mutable { sq.put("hello from the child"); });  // fork: captures work
  child.start();
  child.join();  // safe before reading: put() finished writing when it returned
  std::cout << sq.get() << "; empty now: " << std::boolalpha << sq.empty() << "\n";
}
