// detail/context_impl.hpp: the Context members that need the queue and pool headers
// (included last by the umbrella header).
#pragma once

#include "multiprocessing/context.hpp"
#include "multiprocessing/pool.hpp"
#include "multiprocessing/queues.hpp"

namespace multiprocessing {

template <class T, class... A>
::multiprocessing::Queue<T> Context::Queue(A&&... args) const {
  return ::multiprocessing::Queue<T>(std::forward<A>(args)...);
}

inline ::multiprocessing::Pool Context::Pool(int processes) const {
  PoolOptions o;
  o.processes = processes;
  return Pool(std::move(o));
}

inline ::multiprocessing::Pool Context::Pool(PoolOptions options) const {
  options.start_method = method_;
  return ::multiprocessing::Pool(options);
}

template <StartMethod M>
template <class T, class... A>
::multiprocessing::Queue<T> StaticContext<M>::Queue(A&&... args) const {
  return ::multiprocessing::Queue<T>(std::forward<A>(args)...);
}

template <StartMethod M>
::multiprocessing::Pool StaticContext<M>::Pool(int processes) const {
  return Context(M).Pool(processes);
}

template <StartMethod M>
::multiprocessing::Pool StaticContext<M>::Pool(PoolOptions options) const {
  return Context(M).Pool(std::move(options));
}

}  // namespace multiprocessing
