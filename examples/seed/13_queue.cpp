// The seed notebook's Queue cell ("Comunicación entre procesos"): the child squares its number
// and puts it in the queue; the parent joins the child first, then reads the queue.
//   my_queue = Queue()
//   p = Process(target=worker, args=(5, my_queue)); p.start(); p.join()
//   print("Se lee de la cola: ", my_queue.get())
// Joining before reading is safe here, as in Python for such a small item; unlike Python's
// Queue it stays safe for any amount of data: put() has finished writing when it returns.
#include <iostream>
#include <multiprocessing.hpp>
namespace mp = multiprocessing;

void worker(int num, mp::Queue<int> q) {
  std::cout << "Se pone en la cola:  " << num * num << std::endl;
  q.put(num * num);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Queue<int> my_queue;
  mp::Process p(worker, 5, my_queue);
  p.start();
  p.join();

  std::cout << "Se lee de la cola:  " << my_queue.get() << std::endl;
}
