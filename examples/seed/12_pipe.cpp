// The seed notebook's cell on communication between processes ("Comunicación entre
// procesos"), with a Pipe: a pipe connects two processes (a queue, next, serves many producers
// and consumers). The child squares its number and puts it in the pipe; the parent reads it.
//   parent_conn, child_conn = mp.Pipe()
//   p = mp.Process(target=worker, args=(5, child_conn)); p.start()
//   print("Se lee de la tubería:", parent_conn.recv()); p.join()
#include <iostream>
#include <utility>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

void worker(int num, mp::Connection conn) {
  std::cout << "Se pone en la tubería: " << num * num << std::endl;
  conn.send(num * num);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto [parent_conn, child_conn] = mp::Pipe();
  mp::Process p(worker, 5, std::move(child_conn));  // the child's end goes to the child
  p.start();
  // Read before joining: a child blocked on a full pipe would never end (Python's docs say
  // the same); recv() waits for the message.
  std::cout << "Se lee de la tubería: " << parent_conn.recv<int>() << std::endl;
  p.join();
}
