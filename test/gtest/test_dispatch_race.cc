/* placeholder: filled by the commit that adds its tests */
#include "mrlease_test.h"
