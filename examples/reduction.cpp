// reduction.cpp: example of what crosses a process boundary (Python: reduction.py / pickle):
// a plain struct with no boilerplate, a cereal-style class, and a wrong-type read caught.
#include <cereal/cereal.hpp>  // for CEREAL_NVP (optional: plain ar(a, b) needs no include)

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <multiprocessing/reduction.hpp>

namespace mp = multiprocessing;

// An aggregate: crosses as is (Boost.PFR reflects its fields).
struct Order {
  std::string item;
  int quantity = 0;
  std::optional<double> discount;
  std::vector<std::string> notes;
};

// A class with invariants and private state: a cereal-style serialize() says what crosses.
class Inventory {
 public:
  void add(const std::string& item, int n) { stock_[item] += n; }
  int count(const std::string& item) const {
    auto it = stock_.find(item);
    return it == stock_.end() ? 0 : it->second;
  }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(stock_));
  }

 private:
  std::map<std::string, int> stock_;
};

int main() {
  // Python: data = pickle.dumps(order); pickle.loads(data)
  Order order{"widget", 3, 0.1, {"gift wrap"}};
  std::string msg = mp::reduction::dumps(order);
  Order back = mp::reduction::loads<Order>(msg);
  std::printf("%s x%d (discount %.0f%%, %zu note) in a %zu-byte message\n", back.item.c_str(),
              back.quantity, *back.discount * 100, back.notes.size(), msg.size());

  Inventory inv;
  inv.add("widget", 40);
  auto inv2 = mp::reduction::loads<Inventory>(mp::reduction::dumps(inv));
  std::printf("widgets in stock: %d\n", inv2.count("widget"));

  // A message knows what it holds: reading it as something else is a TypeError, not garbage.
  try {
    (void)mp::reduction::loads<Inventory>(msg);
  } catch (const mp::TypeError& e) {
    std::printf("caught: %s\n", e.what());
  }
  // A damaged message is a DecodeError, never a crash.
  try {
    (void)mp::reduction::loads<Order>(std::string_view(msg).substr(0, msg.size() - 3));
  } catch (const mp::DecodeError& e) {
    std::printf("caught: %s\n", e.what());
  }
  return 0;
}
