// Records the largest single operator-new request while armed, so that a test can show that a
// reader refused a lying header before allocating what the header claims.
#pragma once

#include <cstddef>

namespace dilated::testing {

class AllocationProbe {
 public:
  AllocationProbe();   // arms the probe and clears the record
  ~AllocationProbe();  // disarms it
  AllocationProbe(const AllocationProbe&) = delete;
  AllocationProbe& operator=(const AllocationProbe&) = delete;

  std::size_t largest() const;
};

}  // namespace dilated::testing
