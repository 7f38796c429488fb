/* placeholder: filled by the commit that adds its tests */
#include "rdma_test.h"
