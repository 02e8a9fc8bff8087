#include "ctandemsys.h"
