// The MPI communicator for dilated::dist (host buffers; OpenMPI or MPICH). Link the
// dilated_mpi library (built when CMake finds MPI).
#pragma once

#include <mpi.h>

#include <memory>

#include "dilated/dist.hpp"

namespace dilated::dist {

// A communicator over the ranks of `comm`. MPI must be initialised (thread level funneled or
// higher, since the library computes on other threads while this one communicates) and stay
// so while the communicator is used. Collectives are non-blocking sends and receives polled
// until the timeout, so a rank that never arrives makes the others fail instead of hang.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm);

// The same over MPI_COMM_WORLD, initialising MPI if nobody has (then the communicator
// finalises it when destroyed).
Status mpi_world(std::unique_ptr<Communicator>* out);

}  // namespace dilated::dist
